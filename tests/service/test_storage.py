"""Blob storage helpers: the streamed archive, the artifact path guard, upload filenames."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from core.models import Job
from core.storage import CHUNK_BYTES
from core.storage.local import LocalStorage
from service.storage import artifact_key, clean_filename, stream_tar_gz


def test_tar_gz_streams_in_chunks_and_reads_back(tmp_path: Path) -> None:
    big = os.urandom(CHUNK_BYTES * 2 + 12345)  # random: gzip cannot shrink it into one chunk
    (tmp_path / "weights.bin").write_bytes(big)
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "empty").write_bytes(b"")
    members = [(name, name) for name in ("config.json", "weights.bin", "empty")]

    chunks = list(stream_tar_gz(LocalStorage(tmp_path), members, root="ftjob-1"))
    assert max(len(chunk) for chunk in chunks) < len(big) // 2, "the archive must not be built in one piece"
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as archive:
        names = archive.getnames()
        contents = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert names == ["ftjob-1/config.json", "ftjob-1/weights.bin", "ftjob-1/empty"]
    assert contents == {"ftjob-1/config.json": b"{}", "ftjob-1/weights.bin": big, "ftjob-1/empty": b""}


def test_an_archive_member_that_shrank_stops_the_archive(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"w" * 1000)
    storage = LocalStorage(tmp_path)
    archive = stream_tar_gz(storage, [("weights.bin", "weights.bin")], root="ftjob-1")
    next(archive)  # the header promised 1000 bytes
    (tmp_path / "weights.bin").write_bytes(b"w" * 10)
    with pytest.raises(OSError, match="shrank"):
        list(archive)


def test_artifact_key_stays_inside_the_job_folder() -> None:
    job = Job(id="ftjob-1", attempt=2)
    key = artifact_key(job, "merged/model.safetensors")
    assert key == "artifacts/ftjob-1/attempt-2/merged/model.safetensors"
    for name in ("../attempt-1/adapter.bin", "../../ftjob-2/adapter.bin", "/etc/passwd", ".", ""):
        with pytest.raises(ValueError, match="escapes"):
            artifact_key(job, name)
    # Published before leases: in the job's folder itself.
    assert artifact_key(Job(id="ftjob-1", attempt=0), "a.bin") == "artifacts/ftjob-1/a.bin"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("train.jsonl", "train.jsonl"),
        ("C:\\Users\\me\\data\\train.jsonl", "train.jsonl"),
        ("../../etc/passwd", "passwd"),
        ("evil\r\nX-Header: 1.jsonl", "evilX-Header: 1.jsonl"),
        ("nul\x00.jsonl", "nul.jsonl"),
        ("", "upload.jsonl"),
        ("dir/", "upload.jsonl"),
    ],
)
def test_clean_filename(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean
