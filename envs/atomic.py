"""Writing result files so that a failure never leaves a half-written or mixed file behind.

The data goes to a temporary file beside the target, is flushed to disk (``fsync``) and then renamed
over the target in one step (``os.replace``): readers see either the old file or the new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path`` (parents created), then put it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
