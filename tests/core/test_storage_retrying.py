"""A worker's store waits out an outage: a real S3 endpoint (moto's server) stopped, then started
again on the same port, while an operation retries."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.storage import StoreUnavailable
from core.storage.keys import file_key
from core.storage.retrying import RetryingStorage
from core.storage.s3 import S3Storage
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, new_bucket

DOWN_SECONDS = 1.5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Endpoint:
    """moto's server on a fixed port that can go down and come back (its buckets live in this
    process, so they survive the restart as a real store's would)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    served.start()
    yield served
    served.stop()


def _store(endpoint: Endpoint, bucket: str, outage_seconds: float) -> RetryingStorage:
    inner = S3Storage(
        bucket=bucket,
        prefix="deltatune",
        endpoint_url=endpoint.url,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    return RetryingStorage(inner, outage_seconds=outage_seconds)


@contextmanager
def _down_for(endpoint: Endpoint, seconds: float) -> Iterator[None]:
    endpoint.stop()
    back = threading.Timer(seconds, endpoint.start)
    back.start()
    try:
        yield
    finally:
        back.join()


def test_a_write_and_a_fetch_wait_for_the_store_to_come_back(endpoint: Endpoint, tmp_path: Path) -> None:
    store = _store(endpoint, new_bucket(endpoint.url).name, outage_seconds=60)
    with _down_for(endpoint, DOWN_SECONDS):
        started = time.monotonic()
        store.put_bytes(b"resume point", file_key("f-1"))
        waited = time.monotonic() - started
    assert waited >= DOWN_SECONDS * 0.9  # it did meet the outage, and got through once it ended
    with _down_for(endpoint, DOWN_SECONDS):
        fetched = store.local_file(file_key("f-1"), tmp_path / "scratch")
    assert fetched.read_bytes() == b"resume point"


def test_an_outage_longer_than_its_patience_fails_as_unavailable(endpoint: Endpoint) -> None:
    store = _store(endpoint, new_bucket(endpoint.url).name, outage_seconds=1.0)
    endpoint.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.put_bytes(b"x", file_key("f-2"))
    assert time.monotonic() - started < 30  # bounded: it gave up, it did not hang


def test_a_refusal_is_not_retried(endpoint: Endpoint, tmp_path: Path) -> None:
    store = _store(endpoint, new_bucket(endpoint.url).name, outage_seconds=60)
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        store.local_file(file_key("never-stored"), tmp_path / "scratch")
    with pytest.raises(FileNotFoundError):
        b"".join(store.read_chunks(file_key("never-stored")))
    assert time.monotonic() - started < 10  # answered at once, not after a minute of retries
