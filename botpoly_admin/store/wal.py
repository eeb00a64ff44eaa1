"""Keeping a busy SQLite database's write-ahead log short, off the writers' path.

By default every connection checkpoints on its own (``wal_autocheckpoint``): the
commit that takes the log past 1,000 pages copies it back into the database file,
with two fsyncs, before it returns. With one writer the log then starts over from
the beginning. With two processes writing all the time (``run --processes 2``)
it rarely can: the log can only start over when no reader is still using it, and
some reader always is. Past 1,000 pages, then, *every* commit checkpoints, and the
log grows by tens of megabytes a second. Measured with two workers on 2,000
tenants: a commit took 0.25-0.5 ms instead of 0.09, and cycles took twice as long.

While a run writes, a ``Checkpointer`` thread does that work instead, every
``every_s``: a PASSIVE checkpoint (copies what no reader needs, blocks nobody), then,
once the log is longer than ``RESTART_AFTER_PAGES``, a RESTART one (waits, at most
``RESTART_WAIT_S``, for the readers of the log to finish, so the next writer starts
it over), retried in short steps as ``write_lock`` does. The run's connections turn
their own checkpoints off meanwhile (``SQLiteStore.start_checkpointer``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.25
RESTART_AFTER_PAGES = 1000  # SQLite's own autocheckpoint size
RESTART_WAIT_S = 0.02
RETRY_S = 0.0002
DEFAULT_AUTOCHECKPOINT = 1000


class Checkpointer:
    """A thread checkpointing the database at *path* every *every_s* seconds, on a
    connection of its own, until ``stop``."""

    def __init__(self, path: Path, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.checkpoints = 0  # completed RESTART checkpoints (the log started over)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="botpoly-checkpointer",
                                        daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (after its current checkpoint)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("checkpointer for %s did not start: %s", self.path, exc)
            return
        try:
            while not self._stop.wait(self.every_s):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as exc:  # a busy moment: the next round catches up
                    log.debug("checkpoint of %s: %s", self.path, exc)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> bool:
        """One round on *conn* (busy timeout 0); True if the log will start over."""
        busy, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages < RESTART_AFTER_PAGES:
            return False
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if not busy:
                self.checkpoints += 1
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(RETRY_S)
