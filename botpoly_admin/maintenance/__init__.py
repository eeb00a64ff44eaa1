"""The database as a whole: ``db check``, consistent backups and restores.

- ``check``: ``run_checks`` / ``check_invariants``, the rules as a table (``CHECKS``);
- ``scan``: searching the database's files for plaintexts without dropping SQLite's
  POSIX locks;
- ``verify``: is a file a whole botpoly-admin database (``inspect_database``);
- ``backup`` and ``restore``: through SQLite's backup API, never copying the key
  (``backup_file``: where a backup may go and naming it; ``runners``: who uses the
  database, which refuses a restore); on PostgreSQL through ``pg_dump`` and
  ``pg_restore`` (``postgres_backup``, imported only for a PostgreSQL store);
- ``copy``: a SQLite installation into an empty PostgreSQL database.

Every function takes a store; ``scan`` works on a SQLite file.
"""

from __future__ import annotations

from botpoly_admin.maintenance.backup import backup
from botpoly_admin.maintenance.check import (
    CHECKS,
    Check,
    check_invariants,
    credential_status,
    run_checks,
    tenant_owned_tables,
)
from botpoly_admin.maintenance.restore import restore
from botpoly_admin.maintenance.runners import lease_holders
from botpoly_admin.maintenance.verify import inspect_database, key_location

__all__ = [
    "CHECKS", "Check", "backup", "check_invariants", "credential_status", "inspect_database",
    "key_location", "lease_holders", "restore", "run_checks", "tenant_owned_tables",
]
