"""The local engine: keys are paths under the data folder, and every publish is one rename.

The embedded default and the single-host compose layout. Whatever is written is first made beside its
place (under a hidden name, or in a scratch folder on the same filesystem) and then renamed into it,
so a reader sees it whole or not at all.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from core.storage import CHUNK_BYTES, ObjectInfo


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        path = self.root / key
        # A second guard: keys are built from ids and checked names (core.storage.keys.join).
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} escapes the data folder")
        return path

    def put_file(self, source: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp made it private to us; a stored file is read by workers, maybe as another user.
        os.chmod(source, 0o644)
        os.replace(source, target)

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.chmod(partial, 0o644)
        os.replace(partial, target)

    def publish_folder(self, source: Path, prefix: str, *, move: bool) -> None:
        target = self.path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.rename(source, target)  # same filesystem (scratch is work/ in the data folder)
            return
        staging = target.with_name(f".{target.name}-incoming")
        try:
            shutil.copytree(source, staging)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def stat(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        if not path.is_file():
            return None
        status = path.stat()
        return ObjectInfo(status.st_size, status.st_mtime)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        with self.path(key).open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                yield chunk

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def local_file(self, key: str, scratch: Path) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path

    def local_folder(self, prefix: str, scratch: Path) -> Path | None:
        path = self.path(prefix)
        return path if path.is_dir() else None

    def folders(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def problem(self) -> str | None:
        return None  # the readiness check writes a probe into each of its folders instead

    def remove_folder(self, prefix: str) -> None:
        folder = self.path(prefix)
        if not folder.exists():
            return
        # Renamed aside first, so a crash while deleting never leaves half a folder at its path.
        aside = folder.with_name(f".{folder.name}-removed-{uuid.uuid4().hex[:8]}")
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
