"""Files embed writes for the operator (evidence, manifests, settings, reports, the generated
external models): complete or absent, and private where they describe a production system."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, private: bool = True) -> None:
    """Write `data` to `path` through a temporary file in the same directory, fsynced and renamed
    over the target: a crash leaves the old file or the new one, never half of either. Mode 0600
    when `private` (the default), else 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a crash too
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
