"""Writing secret-bearing files: private (0600) from the first byte, and all or nothing."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class PrivateFileWriter:
    """A file written piece by piece under a temporary name, then `commit()`: fsync, rename,
    fsync the folder, so the final name holds all of it or nothing; `abort()` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temporary, self.path)
        except BaseException:
            self.abort()
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def abort(self) -> None:
        self._file.close()
        self._temporary.unlink(missing_ok=True)


def write_private_atomic(path: Path, blob: bytes) -> None:
    """Temp file, fsync, rename, fsync the folder: all of the file or none of it."""
    writer = PrivateFileWriter(path)
    try:
        writer.write(blob)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
