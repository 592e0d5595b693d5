"""A tiny tmpfs mounted for a test that needs a full disk (the tests run as root); unmounted after."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(
            "this test mounts a small tmpfs to fill a disk, and `mount -t tmpfs` is not permitted here "
            f"(it needs root, or CAP_SYS_ADMIN in a container): {mounted.stderr.strip()}",
            pytrace=False,
        )
    try:
        yield mount_point
    finally:
        # Lazy: a killed worker's files may still be open on it for a moment.
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the disk is full."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while out.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler
