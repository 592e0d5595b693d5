"""A store that rides out an outage: each operation tried again with backoff while the store is
unavailable, for up to `outage_seconds`, then the StoreUnavailable that ended it.

What workers use: a job that has trained for hours must not fail because the object store restarted
while it published (the database gets the same patience, worker.lifecycle.retry_database). The API
does not wait: a client is answered 503 with Retry-After at once (service.errors).

Retrying an operation whole is safe on both engines: a write replaces any object at its key, a
folder's publish takes back what it had uploaded before it raises (and if it cannot, the same keys
are written again), and reads and removals change nothing twice. Reading an object's chunks is
retried only until the first chunk: a stream cut after that cannot be resumed from here.
"""

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from core.storage import ObjectInfo, Storage, StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingStorage:
    def __init__(self, inner: Storage, *, outage_seconds: float) -> None:
        self.inner = inner
        self.outage_seconds = outage_seconds

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        started: float | None = None
        delay = 0.1
        while True:
            try:
                return operation()
            except StoreUnavailable as error:
                now = time.monotonic()
                started = now if started is None else started
                if now - started >= self.outage_seconds:
                    raise
                logger.warning("%s: the object store is unavailable (%s); retry in %.1fs", what, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def put_file(self, source: Path, key: str) -> None:
        self._retry(f"storing {key}", lambda: self.inner.put_file(source, key))

    def put_bytes(self, data: bytes, key: str) -> None:
        self._retry(f"storing {key}", lambda: self.inner.put_bytes(data, key))

    def publish_folder(self, source: Path, prefix: str, *, move: bool) -> None:
        self._retry(f"storing {prefix}", lambda: self.inner.publish_folder(source, prefix, move=move))

    def stat(self, key: str) -> ObjectInfo | None:
        return self._retry(f"reading {key}", lambda: self.inner.stat(key))

    def read_chunks(self, key: str) -> Iterator[bytes]:
        chunks = self._retry(f"reading {key}", lambda: _started(self.inner.read_chunks(key)))
        yield from chunks

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)

    def local_file(self, key: str, scratch: Path) -> Path:
        return self._retry(f"fetching {key}", lambda: self.inner.local_file(key, scratch))

    def local_folder(self, prefix: str, scratch: Path) -> Path | None:
        return self._retry(f"fetching {prefix}", lambda: self.inner.local_folder(prefix, scratch))

    def folders(self, prefix: str) -> list[str]:
        return self._retry(f"listing {prefix}", lambda: self.inner.folders(prefix))

    def remove(self, key: str) -> None:
        self._retry(f"removing {key}", lambda: self.inner.remove(key))

    def remove_folder(self, prefix: str) -> None:
        self._retry(f"removing {prefix}", lambda: self.inner.remove_folder(prefix))

    def problem(self) -> str | None:
        return self.inner.problem()


def _started(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`chunks` with its first chunk already read (so a store that cannot be reached says so here)."""
    first = next(chunks, None)
    if first is None:
        return iter(())

    def rest() -> Iterator[bytes]:
        yield first
        yield from chunks

    return rest()
