"""Blob storage helpers: the streamed archive, the artifact path guard, upload filenames."""

import io
import os
import tarfile
from pathlib import Path

import pytest

from core.models import Job
from core.settings import Settings
from service.storage import CHUNK_BYTES, artifact_file, clean_filename, stream_tar_gz


def test_tar_gz_streams_in_chunks_and_reads_back(tmp_path: Path) -> None:
    big = os.urandom(CHUNK_BYTES * 2 + 12345)  # random: gzip cannot shrink it into one chunk
    (tmp_path / "weights.bin").write_bytes(big)
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "empty").write_bytes(b"")
    members = [(name, tmp_path / name) for name in ("config.json", "weights.bin", "empty")]

    chunks = list(stream_tar_gz(members, root="ftjob-1"))
    assert max(len(chunk) for chunk in chunks) < len(big) // 2, "the archive must not be built in one piece"
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as archive:
        names = archive.getnames()
        contents = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert names == ["ftjob-1/config.json", "ftjob-1/weights.bin", "ftjob-1/empty"]
    assert contents == {"ftjob-1/config.json": b"{}", "ftjob-1/weights.bin": big, "ftjob-1/empty": b""}


def test_artifact_file_stays_inside_the_job_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    job = Job(id="ftjob-1", attempt=2)
    inside = artifact_file(settings, job, "merged/model.safetensors")
    published = tmp_path / "artifacts" / "ftjob-1" / "attempt-2"
    assert inside == (published / "merged" / "model.safetensors").resolve()
    for name in ("../attempt-1/adapter.bin", "../../ftjob-2/adapter.bin", "/etc/passwd", ".", ""):
        with pytest.raises(ValueError, match="escapes"):
            artifact_file(settings, job, name)
    # Published before leases: in the job's folder itself.
    assert (
        artifact_file(settings, Job(id="ftjob-1", attempt=0), "a.bin")
        == (published.parent / "a.bin").resolve()
    )


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
