"""``python -m botpoly_admin`` runs the CLI."""

from botpoly_admin.cli import main

main()
