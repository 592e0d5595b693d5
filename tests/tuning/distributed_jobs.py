"""The job the data-parallel tests train on 1 and on 2 processes, and how they compare two runs.

The model has no dropout: a training that draws no random numbers is the same on any number of
processes. The tolerance is float32's: the gradient of a batch split in two is summed in another order
(a few ulps), and a dozen Adam steps carry that along; the weights and metrics are O(1).
"""

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tuning import Event, JobSpec, ResumeOptions, ResumePoint, RunResult, run
from tuning.checkpoints import Checkpoint

ATOL = 1e-5  # ~100 float32 ulps at O(1): summation order, carried through the steps
TIME_KEYS = frozenset({"elapsed_seconds", "examples_per_second", "train_seconds", "eval_seconds"})


def job_spec(processes: int, max_examples_per_device: int | None = None) -> JobSpec:
    # Batches of 7 split 4 + 3: the loss scale, not an even split, makes the gradients agree.
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert-nodrop",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "head": {"dropout": 0.0},
            "hyperparameters": {
                "epochs": 2,
                "batch_size": 7,
                "learning_rate": 2e-2,
                "warmup_ratio": 0.1,
                "logging_steps": 1,
                "max_grad_norm": 1.0,
                "mixed_precision": "no",  # the processes' CPUs decide nothing
            },
            "checkpoints": {"keep": 1},  # one per epoch, the older dropped: rank 0 writes, the caller is told
            "resources": {"processes": processes, "max_examples_per_device": max_examples_per_device},
        }
    )


class Seen:
    """What a run's caller sees: its events, and its resume points, moved into `store` as a worker would."""

    def __init__(self, store: Path) -> None:
        self.events: list[Event] = []
        self.points: list[ResumePoint] = []
        self.store = store
        self.checkpoints: list[tuple[int, list[int], dict[str, float]]] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_checkpoint(self, checkpoint: Checkpoint, dropped: Any) -> None:
        assert any(checkpoint.path.glob("*.safetensors"))  # complete when the caller hears
        self.checkpoints.append((checkpoint.step, list(dropped), checkpoint.metrics))

    def keep(self, point: ResumePoint) -> None:
        self.store.mkdir(exist_ok=True)
        stored = self.store / point.folder.name
        shutil.move(point.folder, stored)
        self.points.append(ResumePoint(point.step, stored))

    def steps(self) -> list[tuple[str, int, dict[str, Any]]]:
        return [
            (event.type, event.data["step"], {k: v for k, v in event.data.items() if k not in TIME_KEYS})
            for event in self.events
            if "step" in event.data
        ]


def on_one_process(spec: JobSpec, out: Path, files: dict[str, Any]) -> tuple[RunResult, Path, Seen]:
    """`spec` run in this process, as the several-process runs are compared with: its result, artifact
    folder and what it told (resume points every 3 steps, kept beside `out`)."""
    seen = Seen(out.with_name("kept"))
    result = run(
        spec,
        out,
        **files,
        on_event=seen.on_event,
        on_checkpoint=seen.on_checkpoint,
        resume=ResumeOptions(every_steps=3, on_resume_point=seen.keep),
    )
    return result, out, seen


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for path in sorted(out_dir.glob("*.safetensors")):
        found.update({f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()})
    return found


def assert_same_job(
    a: tuple[RunResult, Path],
    b: tuple[RunResult, Path],
    *,
    weights_atol: float = ATOL,
    unconstrained: str | None = None,
) -> float:
    """Same weights within `weights_atol` (but those whose name holds `unconstrained`) and the same metrics
    (but time) within ATOL; returns the largest weight difference of those compared."""
    (result_a, out_a), (result_b, out_b) = a, b
    weights_a, weights_b = weights(out_a), weights(out_b)
    assert sorted(weights_a) == sorted(weights_b) and weights_a
    compared = [name for name in weights_a if unconstrained is None or unconstrained not in name]
    largest = max(float((weights_a[k] - weights_b[k]).abs().max()) for k in compared)
    assert largest <= weights_atol
    assert result_a.steps == result_b.steps and result_a.examples_seen == result_b.examples_seen
    for name, value in result_a.metrics.items():
        if name not in TIME_KEYS:
            assert result_b.metrics[name] == pytest.approx(value, abs=ATOL), name
    return largest
