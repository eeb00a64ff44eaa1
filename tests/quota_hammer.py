"""A process that hammers one tenant's monthly quota (tests/test_postgres_store.py).

Run as ``python quota_hammer.py LOCATION TENANT PERIOD QUOTA THREADS TRIES MODE``:
it opens the store at LOCATION (a SQLite path or a postgresql:// URL), prints
``ready``, waits for a line on standard input, then THREADS threads each try TRIES
times to take one unit with the ledger's conditional upsert, either as one
autocommit statement (MODE ``statement``) or inside ``store.transaction(tenant_id)``
(MODE ``transaction``). It prints how many units it took.
"""

from __future__ import annotations

import sys
import threading

from botpoly_admin.store import open_store

# The ledger's check-and-take (ledger._take_quota), in SQL both backends run.
TAKE = ("INSERT INTO usage (tenant_id, period, trades_used) VALUES (?, ?, 1) "
        "ON CONFLICT (tenant_id, period) DO UPDATE SET trades_used = usage.trades_used + 1 "
        "WHERE usage.trades_used + usage.trades_reserved < ?")


def main(location: str, tenant: str, period: str, quota: int, threads: int, tries: int,
         mode: str) -> int:
    """Take units from *threads* threads at once; return how many were taken."""
    store = open_store(location, create=False)
    start = threading.Barrier(threads)
    taken = [0] * threads

    def hammer(index: int) -> None:
        store.db  # noqa: B018 - connect before the start line, not in the race
        start.wait()
        for _ in range(tries):
            if mode == "statement":
                taken[index] += store.db.conn.execute(TAKE, (tenant, period, quota)).rowcount
            else:
                with store.transaction(tenant_id=tenant) as conn:
                    taken[index] += conn.execute(TAKE, (tenant, period, quota)).rowcount
        store.close()

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    print("ready", flush=True)
    sys.stdin.readline()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(taken)


if __name__ == "__main__":
    location, tenant, period, quota, threads, tries, mode = sys.argv[1:8]
    print(main(location, tenant, period, int(quota), int(threads), int(tries), mode))
