"""Both storage engines keep the same promises: the local folder, and S3 against a real endpoint
(moto's server, tests/s3_server.py)."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.settings import Settings
from core.storage import Storage, open_storage, upload_order
from core.storage.keys import artifact_prefix, file_key, join
from core.storage.local import LocalStorage
from core.storage.s3 import S3Storage
from tests.s3_server import S3Bucket, write_files


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "data")
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return open_storage(Settings(data_dir=tmp_path / "data", **bucket.settings_fields()))


def test_a_stored_file_reads_back_whole_and_the_source_is_used_up(storage: Storage, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # several chunks
    source = tmp_path / "upload"
    source.write_bytes(data)
    storage.put_file(source, file_key("file-1"))
    assert not source.exists()
    info = storage.stat(file_key("file-1"))
    assert info is not None and info.bytes == len(data)
    assert b"".join(storage.read_chunks(file_key("file-1"))) == data
    copy = storage.local_file(file_key("file-1"), tmp_path / "scratch")
    assert copy.read_bytes() == data


def test_bytes_replace_what_was_there(storage: Storage) -> None:
    storage.put_bytes(b"first", "files/f")
    storage.put_bytes(b"second", "files/f")
    assert b"".join(storage.read_chunks("files/f")) == b"second"


def test_what_is_not_stored_says_so(storage: Storage, tmp_path: Path) -> None:
    assert storage.stat("files/none") is None
    with pytest.raises(FileNotFoundError):
        b"".join(storage.read_chunks("files/none"))
    with pytest.raises(FileNotFoundError):
        storage.local_file("files/none", tmp_path / "scratch")
    assert storage.local_folder("artifacts/none", tmp_path / "scratch") is None
    assert storage.folders("artifacts/none") == []
    storage.remove("files/none")
    storage.remove_folder("artifacts/none")


@pytest.mark.parametrize("move", [True, False])
def test_a_published_folder_keeps_its_layout(storage: Storage, tmp_path: Path, move: bool) -> None:
    files = {"manifest.json": b"{}", "adapter_model.safetensors": b"w" * 100, "merged/config.json": b"c"}
    source = write_files(tmp_path / "out", files)
    storage.publish_folder(source, artifact_prefix("ftjob-1", 2), move=move)
    assert source.exists() is not move
    assert storage.folders("artifacts/ftjob-1") == ["attempt-2"]
    folder = storage.local_folder("artifacts/ftjob-1/attempt-2", tmp_path / "scratch")
    assert folder is not None
    stored = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert stored == files


def test_removing_a_folder_removes_all_of_it_and_only_it(storage: Storage, tmp_path: Path) -> None:
    first = write_files(tmp_path / "a", {"x": b"1", "sub/y": b"2"})
    storage.publish_folder(first, "resume/j/step-1", move=True)
    storage.publish_folder(write_files(tmp_path / "b", {"x": b"3"}), "resume/j/step-2", move=True)
    storage.remove_folder("resume/j/step-1")
    assert storage.folders("resume/j") == ["step-2"]
    assert storage.stat("resume/j/step-1/sub/y") is None
    storage.remove(join("resume/j/step-2", "x"))
    assert storage.stat("resume/j/step-2/x") is None


def test_a_manifest_is_uploaded_after_the_files_it_names(tmp_path: Path) -> None:
    files = {"manifest.json": b"{}", "z.pt": b"", "a/manifest.json": b"", "a/w": b""}
    folder = write_files(tmp_path / "p", files)
    names = [p.relative_to(folder).as_posix() for p in upload_order(folder)]
    assert names == ["a/w", "z.pt", "a/manifest.json", "manifest.json"]


def test_an_interrupted_s3_publish_leaves_nothing(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = open_storage(Settings(data_dir=tmp_path, **s3_bucket.settings_fields()))
    assert isinstance(storage, S3Storage)
    source = write_files(tmp_path / "out", {"a.bin": b"a", "b.bin": b"b", "manifest.json": b"{}"})
    real_upload = storage.client.upload_file
    uploads = []

    def upload_then_die(*args: Any, **kwargs: Any) -> None:
        # The process "dies" (an exception reaches the caller) after one object landed.
        if uploads:
            raise ConnectionError("the store went away")
        uploads.append(args)
        real_upload(*args, **kwargs)

    storage.client.upload_file = upload_then_die
    try:
        with pytest.raises(ConnectionError):
            storage.publish_folder(source, "artifacts/ftjob-1/attempt-1", move=True)
    finally:
        storage.client.upload_file = real_upload
    assert len(uploads) == 1
    assert s3_bucket.object_keys() == []
    assert source.is_dir()  # nothing was lost: the caller still has it


def test_an_interrupted_local_copy_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    source = write_files(tmp_path / "out", {"a.bin": b"a"})
    (source / "link").symlink_to(tmp_path / "gone")  # copytree fails on a dangling link
    with pytest.raises(OSError):
        storage.publish_folder(source, "checkpoints/ftjob-1/ckpt-1", move=False)
    assert list((tmp_path / "data" / "checkpoints" / "ftjob-1").iterdir()) == []


def test_s3_keys_sit_under_the_prefix(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = open_storage(Settings(data_dir=tmp_path, **s3_bucket.settings_fields()))
    storage.put_bytes(b"x", file_key("file-1"))
    assert s3_bucket.object_keys() == [f"{s3_bucket.prefix}/files/file-1"]


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a"])
def test_a_name_cannot_climb_out_of_its_folder(name: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        join("artifacts/ftjob-1", name)


def test_without_a_bucket_the_data_folder_is_the_store(tmp_path: Path) -> None:
    storage = open_storage(Settings(data_dir=tmp_path, s3_bucket=""))
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path.resolve()


def test_an_endpoint_without_a_bucket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="s3_bucket: required with s3_endpoint_url"):
        Settings(data_dir=tmp_path, s3_endpoint_url="http://objects.internal:9000")
