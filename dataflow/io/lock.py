"""One run at a time per output folder: an exclusive lock on a file in the folder, naming its holder.

Two runs writing the same folder would edit the same rows twice and remove each other's in-flight temp files.
``output_lock`` takes an exclusive ``flock`` on ``{folder}/.dataflow-edit.lock`` without waiting and writes the
holder's pid, host and start time into it; a second run is refused with one line naming the first. The kernel
drops the lock when its holder dies, however it dies (``kill -9`` included), so the lock of a killed run is
simply taken over by the next one; the file itself stays (removing it would let two runs lock two different files
of the same name).

The lock is re-entrant within a process: the driver holds it for a run, and writing the step file takes it again.
On a system without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Iterable, Iterator, Optional

from dataflow.core.errors import InputError
from dataflow.logger import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = get_logger()

LOCK_NAME = ".dataflow-edit.lock"
_held: dict[str, list] = {}  # real path of a locked folder -> [fd of its lock file, nesting depth]
_held_guard = threading.Lock()


@contextlib.contextmanager
def output_lock(folder: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (creating the folder if needed); ``InputError`` naming the holder when
    another process holds it."""
    folder = os.path.realpath(folder)
    with _held_guard:
        entry = _held.get(folder)
        if entry is not None:
            entry[1] += 1
        else:
            _held[folder] = [_acquire(folder), 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[folder]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[folder]
                _release(entry[0])


@contextlib.contextmanager
def output_locks(folders: Iterable[str]) -> Iterator[None]:
    """Hold the lock of each of ``folders`` for the block: a run's edits and the step file it writes after them
    are one locked span, with no moment in between where a second run could start in the folder."""
    with contextlib.ExitStack() as locks:
        for folder in folders:
            locks.enter_context(output_lock(folder))
        yield


def holds_lock(path: str) -> bool:
    """True when this process holds the lock of ``path``'s folder or of a folder above it."""
    if not _held:
        return False
    folder = os.path.realpath(path)
    while True:
        if folder in _held:
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _acquire(folder: str) -> Optional[int]:
    """The fd of ``folder``'s lock file, locked and holding this process's description (None without fcntl)."""
    if fcntl is None:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(_read_holder(fd))
        os.close(fd)
        raise InputError(f"{folder} is in use by another run ({holder}); wait for it to finish, or write to "
                         f"another output folder. Two runs in one folder would edit the same rows twice.") from None
    except BaseException:
        os.close(fd)
        raise
    stale = _read_holder(fd)
    if stale:
        logger.info("taking over the output folder's lock from a run that is no longer running (%s)",
                    _describe(stale))
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
    return fd


def _release(fd: Optional[int]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # a later run finds no holder to report
    os.close(fd)  # closing the only descriptor drops the flock


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "its pid is not recorded yet"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
