"""Resume points: what an exact resume of an interrupted job needs, written while it trains.

A resume point is not a checkpoint: it is internal to one job, only its latest matters, and it holds
the training state besides the weights. A job resumed from one (`tuning.run(..., resume_from=folder)`)
continues at the next step and ends as the uninterrupted job would have: same weights, same metrics
(bit-identical on the CPU), one continuous series of step events.

A point is a folder `step-<k>/`, complete or absent (filled under a hidden name, then renamed):

    manifest.json               what it is: kind and format version, step, epoch, the job it belongs to
                                (its spec and the spec's sha256, each data file's size and sha256, the
                                base model's weights' sha256), library versions; written last
    state.json                  the loop's counters and histories (tuning.training_state)
    trainable.safetensors       the trainable tensors by parameter name, never the frozen base
    early_stopping.safetensors  the best evaluation's weights, when early stopping keeps them
    optimizer.pt                the optimizer's state_dict (loads with weights_only=True)
    rng.pt                      torch (CPU, CUDA), Python and NumPy random states, and the data order

This module imports no torch (`tuning.run` names its types); tuning.training_state holds the tensors.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tuning.errors import ResumeMismatch
from tuning.spec import JobSpec

logger = logging.getLogger(__name__)

POINT_KIND = "deltatune resume point"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL_SUFFIX = ".partial"
LIBRARIES = ("deltatune", "torch", "transformers", "safetensors")


@dataclass(frozen=True)
class ResumePoint:
    step: int  # optimizer steps completed when it was written
    folder: Path  # a complete folder: self-describing (manifest.json)

    @classmethod
    def read(cls, folder: Path) -> ResumePoint:
        return cls(int(read_point_manifest(folder)["step"]), folder)


ResumePointSink = Callable[[ResumePoint], None]


@dataclass(frozen=True)
class ResumeOptions:
    """When a run writes resume points, and who is told of each.

    `on_resume_point` receives each new point once its folder is complete; it may move the folder away.
    A sink that raises stops the run with its exception (a worker that learns it lost the job).
    `clock` measures `every_seconds` (monotonic seconds; a test passes its own).
    """

    every_steps: int | None = None  # write one after every N optimizer steps
    every_seconds: float | None = None  # ... or when this long has passed since the last one
    # ... or at the next step boundary while this says so (a worker asked to pause the job).
    due_now: Callable[[], bool] | None = field(default=None, compare=False)
    on_resume_point: ResumePointSink | None = None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise ValueError(f"every_steps must be at least 1, not {self.every_steps}")
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ValueError(f"every_seconds must be positive, not {self.every_seconds}")


@dataclass(frozen=True)
class JobIdentity:
    """What makes a resume point this job's: its spec, its data files' content, its base model's weights.

    `fisher_sha256` (EWC's estimate, recomputed by every attempt) is compared, not required: an attempt
    on other hardware may estimate it a rounding apart, and the job should still go on.
    """

    spec: dict[str, Any]
    data: dict[str, dict[str, Any]]  # by spec field (training_file, ...): bytes and sha256
    base_model: dict[str, Any]  # id and weights_sha256, as the artifact manifest records them
    fisher_sha256: str | None = None

    @classmethod
    def of(
        cls, spec: JobSpec, *, base_model_path: Path, data_files: Mapping[str, Path | None]
    ) -> JobIdentity:
        from tuning.artifacts.manifest import weights_sha256  # the artifacts package imports torch

        return cls(
            # Not its resources: a job may resume on another number of processes (tuning.distribution).
            spec.model_dump(mode="json", exclude={"resources"}),
            {name: file_digest(path) for name, path in data_files.items() if path is not None},
            {"id": spec.base_model, "weights_sha256": weights_sha256(base_model_path)},
        )

    @property
    def spec_sha256(self) -> str:
        canonical = json.dumps(self.spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {
            "spec_sha256": self.spec_sha256,
            "spec": self.spec,
            "data": self.data,
            "base_model": self.base_model,
            "fisher_sha256": self.fisher_sha256,
        }


def file_digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256")
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_point_manifest(folder: Path) -> dict[str, Any]:
    """A resume point's manifest; ResumeMismatch when `folder` holds none, or one of another format."""
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise ResumeMismatch(f"{folder.name} is not a resume point: no readable {MANIFEST}") from error
    if manifest.get("kind") != POINT_KIND:
        raise ResumeMismatch(
            f"{folder.name} is not a resume point: its {MANIFEST} is a {manifest.get('kind')!r}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ResumeMismatch(
            f"resume point {folder.name} has format version {manifest.get('format_version')}; "
            f"this deltatune reads version {FORMAT_VERSION}"
        )
    return manifest


def check_resume_point(folder: Path, identity: JobIdentity) -> ResumePoint:
    """The point in `folder`, once it is known to be this job's; else ResumeMismatch saying what differs."""
    manifest = read_point_manifest(folder)
    job = manifest["job"]
    if job["spec_sha256"] != identity.spec_sha256:
        theirs: dict[str, Any] = job["spec"]
        fields = sorted(
            k for k in theirs.keys() | identity.spec.keys() if theirs.get(k) != identity.spec.get(k)
        )
        raise ResumeMismatch(
            f"resume point {folder.name} belongs to another job: its spec differs in {', '.join(fields)}"
        )
    for name in sorted(job["data"].keys() | identity.data.keys()):
        theirs, ours = job["data"].get(name), identity.data.get(name)
        if theirs != ours:
            raise ResumeMismatch(
                f"resume point {folder.name} was trained on another {name}: "
                f"{_described(theirs)} then, {_described(ours)} now"
            )
    if job["base_model"] != identity.base_model:
        raise ResumeMismatch(
            f"resume point {folder.name} was trained on other weights of {identity.base_model['id']}"
        )
    for library, version in _versions().items():
        if manifest["versions"].get(library) != version:
            logger.warning(
                "resume point %s was written with %s %s, this is %s: the resumed job may differ a little",
                folder.name,
                library,
                manifest["versions"].get(library),
                version,
            )
    return ResumePoint(int(manifest["step"]), folder)


def trained_precision(point: ResumePoint) -> str | None:
    """What the point's run trained in ("bf16" autocast or "no"), when it says (older points do not)."""
    recorded = read_point_manifest(point.folder).get("mixed_precision")
    return recorded if recorded in ("bf16", "no") else None


def fisher_matches(point: ResumePoint, identity: JobIdentity) -> bool:
    return bool(read_point_manifest(point.folder)["job"]["fisher_sha256"] == identity.fisher_sha256)


class SavableState(Protocol):
    """What tuning.training_state.TrainingState offers the writer."""

    step: int

    def describe(self) -> dict[str, Any]: ...  # position: epoch, batches done, for the manifest

    def save(self, folder: Path) -> list[str]: ...  # writes its files, returns their names


class ResumePointWriter:
    """tuning.train's resume points: `root/step-<k>`, when `options` says one is due, each handed to the
    sink once complete; afterwards the older ones it wrote and that are still there are deleted."""

    def __init__(
        self,
        options: ResumeOptions,
        root: Path,
        identity: JobIdentity,
        *,
        start_step: int = 0,
        mixed_precision: str | None = None,
    ) -> None:
        self.options, self.root, self.identity = options, root, identity
        self.mixed_precision = mixed_precision  # "bf16" or "no": what the run trains in
        self.last_step = start_step  # a resumed run writes no point of a step it did not train
        self.last_time = options.clock()
        self.written: list[Path] = []
        if root.is_dir():  # what a write cut short (the process killed) left behind
            for partial in root.glob(f".*{PARTIAL_SUFFIX}"):
                shutil.rmtree(partial, ignore_errors=True)

    def due(self, step: int) -> bool:
        if step <= self.last_step:
            return False
        every_steps, every_seconds = self.options.every_steps, self.options.every_seconds
        if every_steps is not None and step % every_steps == 0:
            return True
        if self.options.due_now is not None and self.options.due_now():
            return True
        return every_seconds is not None and self.options.clock() - self.last_time >= every_seconds

    def __call__(self, state: SavableState) -> ResumePoint:
        folder = write_complete_or_absent(
            self.root, f"step-{state.step:08d}", lambda into: self._fill(into, state)
        )
        self.last_step, self.last_time = state.step, self.options.clock()
        point = ResumePoint(state.step, folder)
        if self.options.on_resume_point is not None:
            self.options.on_resume_point(point)
        for older in self.written:
            shutil.rmtree(older, ignore_errors=True)
        self.written = [folder]
        return point

    def _fill(self, folder: Path, state: SavableState) -> None:
        files = state.save(folder)
        manifest = {
            "kind": POINT_KIND,
            "format_version": FORMAT_VERSION,
            **state.describe(),
            "job": self.identity.as_json(),
            "mixed_precision": self.mixed_precision,
            "files": [*files, MANIFEST],
            "versions": _versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def write_complete_or_absent(root: Path, name: str, write: Callable[[Path], None]) -> Path:
    """`root/name`, filled by `write`, whole or not at all.

    `write` fills a hidden folder beside it, which is synced and renamed into place only once `write`
    returns: a failure removes it, a killed process leaves only the hidden name (cleared by the next
    writer), and nobody ever sees `root/name` half written.
    """
    root.mkdir(parents=True, exist_ok=True)
    partial = root / f".{name}{PARTIAL_SUFFIX}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        write(partial)
        _sync(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = root / name
    shutil.rmtree(final, ignore_errors=True)  # the same step written again
    partial.rename(final)
    return final


def _sync(folder: Path) -> None:
    """Flush the folder's files to disk, so the rename never publishes a folder a power cut empties."""
    for path in folder.iterdir():
        with path.open("rb") as stream:
            os.fsync(stream.fileno())


def _described(digest: Mapping[str, Any] | None) -> str:
    if digest is None:
        return "none"
    return f"{digest['bytes']:,} bytes, sha256 {digest['sha256'][:12]}…"


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
