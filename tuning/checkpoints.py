"""Checkpoints: the model as trained so far, written every N steps or each epoch in the final
artifact's layout, at most `keep` of them; and starting a job from one (`from_checkpoint`).
"""

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tuning.errors import SpecError
from tuning.evaluate import Evaluation
from tuning.events import Event
from tuning.spec import CheckpointOptions

if TYPE_CHECKING:
    from torch import nn

    from tuning.artifacts import TrainedJob


@dataclass(frozen=True)
class Checkpoint:
    step: int
    epoch: float
    metrics: dict[str, float]  # the evaluation at this step, as val_<name>; empty if none ran here
    path: Path  # an artifact folder, loadable with tuning.load_artifact
    files: list[str]  # relative to `path`


class CheckpointSink(Protocol):
    """Told of each new checkpoint and of the steps whose checkpoints are no longer kept."""

    def __call__(self, checkpoint: Checkpoint, dropped: Sequence[int]) -> None: ...


class CheckpointWriter:
    """tuning.train's save_checkpoint: writes `root/step-<N>`, keeps the newest `options.keep`."""

    def __init__(
        self,
        options: CheckpointOptions,
        root: Path,
        trained_job: Callable[[dict[str, float]], "TrainedJob"],
        sink: CheckpointSink | None,
    ) -> None:
        self.options = options
        self.root = root
        self.trained_job = trained_job
        self.sink = sink
        self.kept: list[int] = []
        # Built before training starts, so requires_grad still marks the method's whole trainable set;
        # a gradual-unfreezing schedule narrows it mid-training, and the writers rely on it.
        self.trainable = [p for p in trained_job({}).model.parameters() if p.requires_grad]

    def __call__(self, step: int, epoch: float, evaluation: Evaluation | None) -> None:
        from tuning.artifacts import write_artifact  # torch: the API imports this module for Checkpoint

        metrics = {f"val_{name}": value for name, value in (evaluation.metrics if evaluation else {}).items()}
        path = self.root / f"step-{step:08d}"
        job = self.trained_job(metrics)
        with writing_state(job.model, self.trainable):
            files = write_artifact(path, job)
        self.kept.append(step)
        dropped = self.kept[: -self.options.keep]
        self.kept = self.kept[-self.options.keep :]
        for old in dropped:
            shutil.rmtree(self.root / f"step-{old:08d}", ignore_errors=True)
        if self.sink is not None:
            self.sink(Checkpoint(step, round(epoch, 4), metrics, path, files), dropped)


@contextmanager
def writing_state(model: "nn.Module", trainable: Sequence["nn.Parameter"]) -> Iterator[None]:
    """The model as the writers expect it mid-training: in eval mode, as TrainedJob promises them (no
    dropout in anything a writer computes), and with the method's trainable set marked; both put back
    afterwards.

    The model stays where it is: the writers copy tensors to the CPU themselves (cpu_tensors), so an
    accelerator's model is neither moved nor doubled in its memory.
    """
    modes = {module: module.training for module in model.modules()}
    requires = [parameter.requires_grad for parameter in trainable]
    model.eval()
    for parameter in trainable:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for parameter, required in zip(trainable, requires, strict=True):
            parameter.requires_grad_(required)


def load_checkpoint_weights(model: "nn.Module", checkpoint_dir: Path) -> Event:
    """Put a checkpoint's trained tensors into `model`, built (base, head, method) like the checkpoint's."""
    from tuning.artifacts import artifact_layout  # torch: the API imports this module for Checkpoint
    from tuning.artifacts.manifest import read_manifest

    manifest = read_manifest(checkpoint_dir)
    _check_labels(model, manifest)
    artifact_layout(manifest["method"], manifest["layout"]).load(model, checkpoint_dir)
    metrics = manifest.get("metrics", {})
    shown = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
    return Event(
        "message",
        f"starting from checkpoint {checkpoint_dir.name}" + (f" ({shown})" if shown else ""),
        {"from_checkpoint": checkpoint_dir.name, "checkpoint_metrics": metrics, "layout": manifest["layout"]},
    )


def _check_labels(model: "nn.Module", manifest: dict[str, Any]) -> None:
    """The head's rows are the checkpoint's labels, in its order: a job with other labels cannot reuse it."""
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    stored = [str(manifest["labels"][str(index)]) for index in range(len(manifest["labels"]))]
    if not stored or not id2label:  # regression and causal_lm heads carry no label map to compare
        return
    labels = [str(id2label[index]) for index in range(len(id2label))]
    if labels != stored:
        raise SpecError(
            f"the checkpoint was trained on labels {stored[:10]}, this job's data has {labels[:10]}",
            param="from_checkpoint",
        )
