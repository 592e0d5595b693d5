"""`deltatune jobs download`: a succeeded job's artifact, each file checked against its sha256.

The files (or the archive) are written beside the target under a temporary name, checked against
the artifact listing (every file there, none more, each of its size and sha256), and only then
moved to the target: a download that breaks or does not match leaves nothing under the target's
name. An existing target is replaced only with `force`.
"""

import hashlib
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from service.client.api import DeltatuneClient

CHUNK = 1024 * 1024


class DownloadProblem(Exception):
    """The target is in the way, or what came does not match the listing."""


class ChecksumMismatch(DownloadProblem):
    pass


def download_files(
    client: DeltatuneClient, job_id: str, target: Path, *, force: bool, console: Console
) -> list[dict[str, Any]]:
    """Every artifact file into the folder `target`; returns the listing checked against."""
    artifacts = _listing(client, job_id)
    _check_free(target, force=force)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with _progress(console, total=sum(a["bytes"] for a in artifacts)) as progress:
            task = progress.add_task("downloading", total=sum(a["bytes"] for a in artifacts))
            for artifact in artifacts:
                path = partial / _safe_name(artifact["name"])
                path.parent.mkdir(parents=True, exist_ok=True)
                with client.download(artifact["url"]) as response, path.open("wb") as handle:
                    digest = hashlib.sha256()
                    for chunk in response.iter_bytes(CHUNK):
                        handle.write(chunk)
                        digest.update(chunk)
                        progress.advance(task, len(chunk))
                _check(artifact, digest.hexdigest(), path.stat().st_size)
        _replace(target, partial)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return artifacts


def download_archive(
    client: DeltatuneClient, job_id: str, target: Path, *, force: bool, console: Console
) -> list[dict[str, Any]]:
    """The artifact as one .tar.gz at `target`, each member checked; returns the listing."""
    artifacts = _listing(client, job_id)
    _check_free(target, force=force)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with _progress(console, total=None) as progress:
            task = progress.add_task("downloading", total=None)
            with (
                client.download(f"/v1/jobs/{job_id}/artifacts.tar.gz") as response,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        _check_members(partial, artifacts)
        _replace(target, partial)
    finally:
        partial.unlink(missing_ok=True)
    return artifacts


def _listing(client: DeltatuneClient, job_id: str) -> list[dict[str, Any]]:
    job = client.get_job(job_id)
    if job["status"] != "succeeded":
        raise DownloadProblem(f"job {job_id} is {job['status']}; only a succeeded job has an artifact")
    artifacts: list[dict[str, Any]] = client.list_artifacts(job_id)["data"]
    for artifact in artifacts:
        _safe_name(artifact["name"])
    return artifacts


def _safe_name(name: str) -> PurePosixPath:
    """An artifact's name as a path inside the target: never absolute, never climbing out of it."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DownloadProblem(f"refusing the artifact name {name!r}: it points outside the download folder")
    return path


def _check_free(target: Path, *, force: bool) -> None:
    if force or not (target.exists() or target.is_symlink()):
        return
    raise DownloadProblem(f"{target} already exists; pass --force to replace it, or --output elsewhere")


def _check(artifact: dict[str, Any], sha256: str, size: int) -> None:
    if sha256 != artifact["sha256"] or size != artifact["bytes"]:
        raise ChecksumMismatch(
            f"{artifact['name']}: got {size} bytes with sha256 {sha256}, the listing says "
            f"{artifact['bytes']} bytes with sha256 {artifact['sha256']}; nothing was written"
        )


def _check_members(archive: Path, artifacts: Iterable[dict[str, Any]]) -> None:
    expected = {artifact["name"]: artifact for artifact in artifacts}
    found: set[str] = set()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name  # under <job id>/
            if name not in expected:
                raise ChecksumMismatch(f"the archive holds {member.name!r}, which the listing does not name")
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file
            digest = hashlib.sha256()
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            _check(expected[name], digest.hexdigest(), member.size)
            found.add(name)
    missing = sorted(set(expected) - found)
    if missing:
        raise ChecksumMismatch(f"the archive lacks {', '.join(missing)}, which the listing names")


def _replace(target: Path, partial: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    partial.rename(target)


def _progress(console: Console, *, total: int | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
