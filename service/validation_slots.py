"""How many file validations an API process runs at once.

Validating a job's files (reading and tokenizing every line, service.usable_files) is the heaviest
work the API does: it runs in the thread pool, off the event loop, and at most
`validation_concurrency` run at once per process, so a burst of dry runs queues here instead of
taking every core and every pooled connection from the reads beside it. A request that waits longer
than `validation_wait_seconds` for a slot answers 503 with Retry-After.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ApiError

_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _semaphore(limit: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(limit, threading.BoundedSemaphore(limit))


@contextmanager
def validation_slot(*, limit: int, wait_seconds: float) -> Iterator[None]:
    slots = _semaphore(limit)
    if not slots.acquire(timeout=wait_seconds):
        retry_after = max(1, round(wait_seconds))
        raise ApiError(
            f"the server is busy validating other jobs' files; retry in {retry_after} seconds",
            status_code=503,
            code="busy",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        yield
    finally:
        slots.release()
