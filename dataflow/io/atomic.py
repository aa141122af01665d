"""Crash-safe file writes: write a temp file in the destination folder, fsync it, then ``os.replace``.

A reader therefore sees either the old file or the complete new one, never a torn file.

Text is written as UTF-8 with ``errors="backslashreplace"`` (``TEXT_ERRORS``): the only characters UTF-8 cannot
hold are lone surrogates (``"caf\\ud800"``, from a ``\\ud800`` JSON escape or a ``surrogateescape`` decoder), and
``\\ud800`` is their escape in JSON, where it reads back as the same string, and readable text in HTML or CSV. One
odd string in one row never fails a whole file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import tempfile
from typing import IO, Iterator

from dataflow.core.errors import InputError
from dataflow.io.lock import holds_lock

TEXT_ERRORS = "backslashreplace"  # see the module's docstring


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path`` atomically."""
    errors = TEXT_ERRORS
    if "b" in mode:
        encoding = errors = None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    if holds_lock(folder):  # only the run that holds the folder knows that no other write is in flight there
        remove_stale_temps(folder, prefix)
    fd, tmp = _create_temp(folder, prefix)
    try:
        with named_os_errors(path), os.fdopen(fd, mode, encoding=encoding, errors=errors) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


@contextlib.contextmanager
def named_os_errors(path: str) -> Iterator[None]:
    """Give an ``OSError`` raised without a file name (a write or fsync on a full disk: ``[Errno 28] No space
    left on device``) the name of ``path``, so that the one-line error says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, path) from exc


def _create_temp(folder: str, prefix: str) -> tuple[int, str]:
    """A new, empty temp file ``{prefix}{random}.tmp`` in ``folder``, opened for writing: (fd, path).

    Unlike ``tempfile.mkstemp``, which always makes mode 0600, the file is created with mode 0666 less the umask,
    as ``open`` would make it: the step files, images and galleries of a run are readable by whoever the user's
    umask lets read their files (0644 under the usual 022), on shared storage and behind a web server.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", os.path.join(folder, prefix + "*.tmp"))


def remove_stale_temps(folder: str, prefix: str) -> None:
    """Delete temp files a killed earlier write of the same file left behind (call it only while holding the
    folder's ``output_lock``: another process's write in flight has a temp file of the same form)."""
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        with contextlib.suppress(OSError):
            os.unlink(stale)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_writable_folder(folder: str, what: str = "folder") -> None:
    """Create ``folder`` if needed and check that files can be written in it; ``InputError`` saying which and why.

    Runs before any model loads, so that a mistyped output path costs seconds, not a model load and a failed run.
    """
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the {what} {folder}: {exc.strerror or exc}") from None
    if not os.path.isdir(folder):
        raise InputError(f"the {what} {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dataflow-write-check.", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write in the {what} {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
