"""Where files, artifacts, checkpoints and resume points are stored: one interface, two engines.

The local folder (`data_dir`, the embedded default) keeps today's layout and its renames; an
S3-compatible object store (DELTATUNE_S3_BUCKET set) holds the same keys under a prefix, so the API
and workers on other hosts share them. Keys are described in core.storage.keys.

What each write promises, on both engines: an object appears whole or not at all (a rename; an S3
PUT or completed multipart upload), and a folder is published file by file with its manifest.json
last, so a reader that finds the manifest finds the rest. Which folders count is decided elsewhere:
the database rows that name them (artifacts, checkpoints) or the manifest (resume points).
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from core.settings import Settings

CHUNK_BYTES = 1024 * 1024
MANIFEST = "manifest.json"


class StoreUnavailable(OSError):
    """The object store cannot be reached, or answered with a server error: a retry may succeed."""


@dataclass(frozen=True)
class ObjectInfo:
    bytes: int
    modified: float  # seconds since the epoch


class Storage(Protocol):
    def put_file(self, source: Path, key: str) -> None:
        """Store the local file `source` under `key`, replacing any object there; `source` is used up."""

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store `data` under `key`, replacing any object there."""

    def publish_folder(self, source: Path, prefix: str, *, move: bool) -> None:
        """Store every file under the local folder `source` as `prefix/<relative path>`. With `move`
        the source is used up; without it, it is left as it was."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and time, or None when there is none."""

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes, a chunk at a time; FileNotFoundError when there is none."""

    def local_path(self, key: str) -> Path | None:
        """The object as a file of this machine, when the engine keeps it as one (the local folder)."""

    def local_file(self, key: str, scratch: Path) -> Path:
        """A local file to read `key` from: the stored file itself, or a download into `scratch`.
        FileNotFoundError when there is none. The caller never writes to or removes what it gets."""

    def local_folder(self, prefix: str, scratch: Path) -> Path | None:
        """A local folder to read `prefix` from (as local_file), or None when nothing is stored there."""

    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under `prefix`, sorted."""

    def remove(self, key: str) -> None:
        """Remove one object; nothing happens when there is none."""

    def remove_folder(self, prefix: str) -> None:
        """Remove everything under `prefix`; nothing happens when there is nothing."""

    def problem(self) -> str | None:
        """Why the store cannot be used now (unreachable, no such bucket, refused), or None."""


def upload_order(folder: Path) -> list[Path]:
    """A folder's files, each manifest.json after the files beside it: a reader that finds a manifest
    finds the files it names."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    return sorted(files, key=lambda path: (path.name == MANIFEST, path.as_posix()))


def open_storage(settings: Settings) -> Storage:
    """The storage `settings` name. One per process and configuration: an S3 client keeps its
    connections, and a forked worker process must not share its parent's."""
    return _open(
        os.getpid(),
        settings.data_dir.resolve(),
        settings.s3_bucket or None,
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
        settings.s3_prefix,
    )


@lru_cache(maxsize=16)
def _open(
    pid: int,
    data_dir: Path,
    bucket: str | None,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    prefix: str,
) -> Storage:
    if bucket is None:
        from core.storage.local import LocalStorage

        return LocalStorage(data_dir)
    from core.storage.s3 import S3Storage

    return S3Storage(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
    )
