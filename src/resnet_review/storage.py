"""Writing files so that a crash never leaves a truncated one where a good one was, and identical
content gives identical bytes."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

STALE_TMP_S = 600  # a temporary file this old is a killed writer's leftover, not a save in progress
# free space below this after a failed write means the disk filled up: torch reports that only as
# "unexpected pos ... vs ..." from its zip writer, which names neither the file nor the cause
DISK_FULL_BYTES = 64 * 2**20


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes this process can still write under ``folder`` (root may use the reserved blocks too)."""
    stat = os.statvfs(folder)
    return (stat.f_bfree if os.geteuid() == 0 else stat.f_bavail) * stat.f_frsize


def _disk_full(path: Path, tmp: str, err: BaseException) -> OSError | None:
    """An error that names ``path`` and the full disk, when that is why writing it failed."""
    if not isinstance(err, Exception):  # an interrupt is not a full disk
        return None
    try:
        written, free = Path(tmp).stat().st_size, free_bytes(path.parent)
    except OSError:
        return None
    if getattr(err, "errno", None) != errno.ENOSPC and free >= DISK_FULL_BYTES:
        return None
    return OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path.name} "
                   f"({written / 2**20:.0f} MiB written, {free / 2**20:.0f} MiB free); the file there, if any, "
                   f"is unchanged: free disk space (README: Profiles gives what each profile keeps) and run again")


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """``write`` into a temporary file beside ``path``, flushed to disk, then renamed over it; the
    leftovers of earlier writers that were killed mid-save are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_TMP_S:
                stale.unlink()
        except FileNotFoundError:  # another process removed it first
            pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException as err:
        full = _disk_full(path, tmp, err)
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from err
        raise
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` through an open file (a path would be recorded in the archive, so every save
    of the same content would differ), atomically."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_save_script(module, path: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
    """``torch.jit.save`` of a TorchScript module (with ``extra_files`` beside its code), atomically."""
    return _atomic_write(path, lambda handle: torch.jit.save(module, handle, _extra_files=extra_files or {}))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: a reader sees the old file or the new one, never a part."""
    return _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
