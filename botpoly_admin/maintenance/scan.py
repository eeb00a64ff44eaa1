"""Searching a database's files for byte strings, without disturbing SQLite's locks.

``db check`` looks for every credential's plaintext in the database file, its WAL and
its rollback journal (``no_plaintext_secrets``). Reading the main file needs care:
SQLite locks it with POSIX advisory locks, and POSIX drops *every* lock a process
holds on a file when the process closes *any* descriptor of that file. A plain
``open()``/``close()`` here would silently release the shared lock of each of this
process's SQLite connections (``run`` holds one per worker thread, the check holds
one), and another process closing its last connection would then see none left,
checkpoint and delete the WAL under them. So the files are read by a child process
(``cat``), whose descriptors are not ours: nothing is opened or closed here.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator, Sequence
from operator import itemgetter
from pathlib import Path

from botpoly_admin.errors import StoreError

_GRAM = 8  # see scan_files
_READ_BYTES = 8 << 20


def scan_files(paths: Sequence[Path], needles: Sequence[bytes]
               ) -> Iterator[tuple[Path, bytes]]:
    """Yield (file, needle) for each needle found in each file, reading in chunks.

    One ``find`` per needle over a large file costs too much with thousands of
    credentials, so the long needles are matched by their 8-byte pieces first: any
    occurrence of a needle of 15 bytes or more covers a whole 8-byte block aligned
    to a multiple of 8 in the chunk, so comparing the aligned blocks of the chunk (in
    C, through ``struct.iter_unpack``) with a set of every needle's pieces finds the
    few candidates, which are then confirmed with ``in``. Shorter needles are searched
    for directly. Chunks overlap by the longest needle, so none falls between two.
    """
    if not needles:
        return
    pieces: dict[bytes, set[bytes]] = {}
    direct = []
    for needle in needles:
        if len(needle) >= 2 * _GRAM - 1:
            for i in range(len(needle) - _GRAM + 1):
                pieces.setdefault(needle[i:i + _GRAM], set()).add(needle)
        else:
            direct.append(needle)
    overlap = max(len(n) for n in needles) - 1
    unpack = struct.Struct(f"{_GRAM}s").iter_unpack
    for path in paths:
        found: set[bytes] = set()
        for chunk in read_chunks(path, overlap):
            view = memoryview(chunk)[:len(chunk) - len(chunk) % _GRAM]
            hits = pieces.keys() & map(itemgetter(0), unpack(view))
            candidates = {n for piece in hits for n in pieces[piece]}
            for needle in candidates.union(direct) - found:
                if needle in chunk:
                    found.add(needle)
                    yield path, needle


def read_chunks(path: Path, overlap: int) -> Iterator[bytes]:
    """The file in chunks, each starting with the last *overlap* bytes of the one before.

    Read through a child process, never through a descriptor of ours (see the module's
    docstring). Plain reads, not mmap: the WAL may shrink under us, which a mapping
    turns into a SIGBUS. A file removed meanwhile (a -wal removed by its last
    connection closing) yields nothing.
    """
    try:
        reader = subprocess.Popen(["cat", "--", str(path)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: no `cat` to read it with ({exc.strerror})"
                         ) from None
    assert reader.stdout is not None and reader.stderr is not None
    finished = False
    try:
        tail = b""
        while block := reader.stdout.read(_READ_BYTES):
            chunk = tail + block
            yield chunk
            tail = chunk[-overlap:] if overlap else b""
        error = reader.stderr.read()
        finished = True
    finally:
        if not finished:
            reader.kill()  # the caller stopped early
        reader.stdout.close()
        reader.stderr.close()
        reader.wait()
    if reader.returncode and path.exists():
        message = " ".join(error.decode(errors="replace").split())
        raise StoreError(f"cannot read {path}: {message}")
