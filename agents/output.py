"""One live run per output folder: ``OUT/.lock``, held by the run that writes there.

A run takes the lock before it changes anything in its folder (:func:`lock_output`, called by
:func:`agents.evaluation.claim_output` and :class:`agents.resume.ResumePoint`); a second run into the
same folder is refused with the folder and the owner's process id. The lock is an ``flock`` on the
file, which holds the owner's pid: the operating system releases it when the owner's process ends,
however it ends, so a crashed run never leaves a stuck folder behind (the file stays, unlocked).
Windows has no ``flock``: there the folder is created but not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.cli import UserFileExistsError, UserOSError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

#: The lock file's name inside an output folder.
LOCK_NAME = ".lock"

#: Folders this process owns (resolved path -> the open lock file's descriptor): taking one twice is a no-op.
_HELD: dict[Path, int] = {}


def lock_output(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and make this process its one owner, until :func:`release_output` or
    the end of the process. Taking a folder this process already owns does nothing.

    :param out: the run's output folder.
    :return: ``out`` as a :class:`~pathlib.Path`.
    :raises UserFileExistsError: ``out`` is a file, or another live run owns it (its pid is named).
    :raises UserOSError: ``out`` cannot be created or written.
    """
    out = Path(out)
    key = out.resolve()
    if key in _HELD:
        return out
    if out.exists() and not out.is_dir():
        raise UserFileExistsError(f"--out {out} is a file, not a folder; pass a folder (new, or a run's) as --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserOSError(
            f"cannot write to --out {out} ({error.strerror or error}); pass a folder you can write to as --out."
        ) from None
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise UserFileExistsError(
                f"{out} is in use by another run (process {owner}): two runs in one folder would overwrite "
                "each other's files. Wait for that run to end (or stop it), or pass another --out."
            ) from None
        except OSError as error:  # a file system without locks
            os.close(descriptor)
            raise UserOSError(
                f"cannot lock --out {out} ({error.strerror or error}): a run needs a folder only it writes to; "
                "pass a folder on a local disk as --out."
            ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = descriptor
    return out


def release_output(out: str | os.PathLike) -> None:
    """Give up this process's ownership of ``out`` (nothing if it does not own it)."""
    descriptor = _HELD.pop(Path(out).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the file releases the flock
