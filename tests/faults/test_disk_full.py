"""The data folder's disk fills: an upload answers 507 and stores nothing; a job whose worker cannot
write fails with `disk_full`, says so without naming a server path, and leaves no staging behind.

The disk is a small tmpfs mounted for the test (the tests run as root), holding the whole data folder;
the database and the logs live elsewhere.
"""

import errno
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.conftest import DeployFactory
from tests.faults.outcomes import assert_no_leftovers
from tests.small_disk import small_disk as mounted_small_disk

pytestmark = pytest.mark.integration

DISK_BYTES = 16 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_small_disk(tmp_path / "small-disk", DISK_BYTES) as mount_point:
        yield mount_point


@contextmanager
def kept_full(disk: Path) -> Iterator[None]:
    """Fill the disk, and keep it full: whatever the worker frees (an older resume point it deletes)
    is taken again within milliseconds, so its next write finds no space. Removed on exit."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    full = threading.Event()
    stop = threading.Event()

    def fill() -> None:
        block = b"\0" * 4096
        while not stop.is_set():
            try:
                os.write(descriptor, block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                full.set()
                time.sleep(0.002)

    thread = threading.Thread(target=fill, name="disk-filler", daemon=True)
    thread.start()
    try:
        assert full.wait(timeout=30), "the disk did not fill"
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        os.close(descriptor)
        filler.unlink()


@pytest.mark.timeout(120)
def test_a_full_data_disk_refuses_uploads_with_507_and_fails_a_training_job_with_disk_full(
    small_disk: Path, deployment: DeployFactory
) -> None:
    d = deployment(workers=("w1",), data_dir=small_disk / "data")
    files_before = sorted((d.data_dir / "files").iterdir()) if (d.data_dir / "files").is_dir() else []
    line = '{"text": "' + "x" * 1000 + '", "label": "a"}'
    too_big = d.client.post(
        "/v1/files",
        files={"file": ("big.jsonl", ("\n".join([line] * (DISK_BYTES // 1000 + 200)) + "\n").encode())},
        data={"purpose": "fine-tune"},
    )
    assert too_big.status_code == 507, too_big.text
    assert too_big.json()["error"]["code"] == "insufficient_storage"
    assert sorted((d.data_dir / "files").iterdir()) == files_before
    assert list((d.data_dir / "uploads").iterdir()) == []

    job_id = d.submit(d.slow_job())
    d.wait_for(job_id, lambda _: d.last_step(job_id) >= 4, timeout=90)
    with kept_full(small_disk):
        job = d.wait_for(job_id, "failed", timeout=60)
        error = job["error"]
        assert error["code"] == "disk_full", error
        assert str(small_disk) not in error["message"] and "/" not in error["message"], error
        assert d.artifact_rows(job_id) == [] and not (d.data_dir / "artifacts" / job_id).exists()
        assert_no_leftovers(d)  # cleared on the full disk itself
