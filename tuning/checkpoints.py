"""Checkpoints: the model as trained so far, written every N steps or each epoch in the final
artifact's layout, at most `keep` of them; and starting a job from one (`from_checkpoint`).
"""

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

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

    def __call__(self, step: int, epoch: float, evaluation: Evaluation | None) -> None:
        from tuning.artifacts import write_artifact

        metrics = {f"val_{name}": value for name, value in (evaluation.metrics if evaluation else {}).items()}
        path = self.root / f"step-{step:08d}"
        files = write_artifact(path, self.trained_job(metrics))
        self.kept.append(step)
        dropped = self.kept[: -self.options.keep]
        self.kept = self.kept[-self.options.keep :]
        for old in dropped:
            shutil.rmtree(self.root / f"step-{old:08d}", ignore_errors=True)
        if self.sink is not None:
            self.sink(Checkpoint(step, round(epoch, 4), metrics, path, files), dropped)


def load_checkpoint_weights(model: "nn.Module", checkpoint_dir: Path) -> Event:
    """Put a checkpoint's trained tensors into `model`, built (base, head, method) like the checkpoint's."""
    raise NotImplementedError("from_checkpoint: to be built")
