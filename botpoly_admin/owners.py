"""Who holds a lease: an owner id names one process on one host, and can say when that
process is gone.

Ids are ``host:pid:random[.pidns]``: unique even across pid reuse, and, with the pid
namespace, enough to prove on the same machine that the owner is dead, so that its
leases are taken over at once instead of waited out (see ``botpoly_admin.bots``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable


def _pid_namespace() -> str | None:
    """This process's pid namespace (Linux), so two containers sharing a hostname are
    never taken for one machine; None where it cannot be known."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def new_owner_id() -> str:
    """A runner's identity: ``host:pid:random[.pidns]``, unique even across pid reuse.

    The pid namespace lets ``owner_gone`` prove an owner dead; without it, an owner's
    leases are only taken over once they expire.
    """
    namespace = _pid_namespace()
    tag = uuid.uuid4().hex[:8] + (f".{namespace}" if namespace else "")
    return f"{socket.gethostname()}:{os.getpid()}:{tag}"


def owner_gone(owner: str) -> bool:
    """True when *owner* ran on this machine (same host and pid namespace) and its
    process no longer exists: its leases can be taken at once.

    False whenever that cannot be proven (another machine, an unknown namespace, a
    pid alive, or reused by another process): such leases are waited out.
    """
    host, _, rest = owner.partition(":")
    pid, _, tag = rest.partition(":")
    namespace = _pid_namespace()
    if host != socket.gethostname() or namespace is None or not tag.endswith(f".{namespace}") \
            or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def gone_owners(owners: Iterable[str | None]) -> set[str]:
    """Those of *owners* known dead (``owner_gone``), each checked once."""
    return {o for o in set(owners) if o is not None and owner_gone(o)}


def owner_host_pid(owner: str | None) -> dict[str, str | int | None]:
    """The host and pid an owner id names (``host``/``pid`` None for no owner)."""
    if owner is None:
        return {"host": None, "pid": None}
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return {"host": host, "pid": int(pid) if pid.isdigit() else None}


def runner_label(owner: str | None) -> str | None:
    """Which process on which machine an owner id names, as ``host:pid`` (None for none):
    what ``bots status`` and the dashboard show in their Runner column."""
    if owner is None:
        return None
    named = owner_host_pid(owner)
    return f"{named['host']}:{named['pid'] if named['pid'] is not None else '?'}"
