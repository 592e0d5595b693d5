"""A job on 2 processes (torchrun, gloo, DDP) ends as the same job on 1: same weights, same metrics; and
a resume point written by 2 processes resumes on 1; a process killed when no restart is left fails the
run, never hangs it (tests/worker/test_training_processes.py kills one that torchrun starts again).

The 2-process runs are real: torchrun starts them and tuning.launch serves rank 0 (a few seconds of
imports each, so few launches). The model has no dropout: a training that draws no random numbers is
the same on any number of processes. The tolerance is float32's: the gradient of a batch split in two
is summed in another order (a few ulps), and a dozen Adam steps carry that along; values are O(1).
"""

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import make_tiny_bert
from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import Event, JobSpec, ResumeOptions, ResumePoint, RunResult, run
from tuning.checkpoints import Checkpoint
from tuning.launch import TrainingProcessesFailed, run_in_processes

ATOL = 1e-5  # ~100 float32 ulps at O(1): summation order, carried through the steps
TIME_KEYS = frozenset({"elapsed_seconds", "examples_per_second", "train_seconds", "eval_seconds"})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("distributed")
    make_tiny_bert(directory / "models" / "tiny-bert-nodrop", dropout=0.0)
    return {
        "training_path": write_jsonl(directory / "train.jsonl", sentiment_lines(48, seed=1)),
        "validation_path": write_jsonl(directory / "validation.jsonl", sentiment_lines(16, seed=2)),
        "model_dirs": [directory / "models"],
    }


def job_spec(processes: int) -> JobSpec:
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
            "resources": {"processes": processes},
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
        assert (checkpoint.path / "adapter_model.safetensors").exists()  # complete when the caller hears
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


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for path in sorted(out_dir.glob("*.safetensors")):
        found.update({f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()})
    return found


def assert_same_job(a: tuple[RunResult, Path], b: tuple[RunResult, Path]) -> float:
    """Same weights within ATOL and the same metrics (but time); returns the largest weight difference."""
    (result_a, out_a), (result_b, out_b) = a, b
    weights_a, weights_b = weights(out_a), weights(out_b)
    assert sorted(weights_a) == sorted(weights_b) and weights_a
    largest = max(float((weights_a[k] - weights_b[k]).abs().max()) for k in weights_a)
    assert largest <= ATOL
    assert result_a.steps == result_b.steps and result_a.examples_seen == result_b.examples_seen
    for name, value in result_a.metrics.items():
        if name not in TIME_KEYS:
            assert result_b.metrics[name] == pytest.approx(value, abs=ATOL), name
    return largest


@pytest.fixture(scope="module")
def one_process(
    files: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Path, Seen]:
    out = tmp_path_factory.mktemp("one") / "out"
    seen = Seen(out.with_name("kept"))
    result = run(
        job_spec(1),
        out,
        **files,
        on_event=seen.on_event,
        on_checkpoint=seen.on_checkpoint,
        resume=ResumeOptions(every_steps=3, on_resume_point=seen.keep),
    )
    return result, out, seen


@pytest.mark.timeout(120)
def test_two_processes_end_as_one(
    files: dict[str, Any], one_process: tuple[RunResult, Path, Seen], tmp_path: Path
) -> None:
    seen = Seen(tmp_path / "kept")
    result = run_in_processes(
        job_spec(2),
        tmp_path / "out",
        **files,
        on_event=seen.on_event,
        on_checkpoint=seen.on_checkpoint,
        resume=ResumeOptions(every_steps=3, on_resume_point=seen.keep),
    )
    largest = assert_same_job((one_process[0], one_process[1]), (result, tmp_path / "out"))
    print(f"1 vs 2 processes: largest weight difference {largest:.3g}")
    one_steps, two_steps = one_process[2].steps(), seen.steps()
    assert [s[:2] for s in one_steps] == [s[:2] for s in two_steps]
    for (_, _, a), (_, _, b) in zip(one_steps, two_steps, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert b[key] == (pytest.approx(value, abs=ATOL) if isinstance(value, float) else value), key
    one_checkpoints, two_checkpoints = one_process[2].checkpoints, seen.checkpoints
    assert [c[:2] for c in two_checkpoints] == [c[:2] for c in one_checkpoints] == [(7, []), (14, [7])]
    for (_, _, a), (_, _, b) in zip(one_checkpoints, two_checkpoints, strict=True):
        assert b == pytest.approx(a, abs=ATOL)
    # Rank 0's points hold the whole state: one process resumes where two left off.
    assert [point.step for point in seen.points] == [3, 6, 9, 12]
    resumed = tmp_path / "resumed"
    result_resumed = run(job_spec(1), resumed, **files, resume_from=seen.points[1].folder)
    assert_same_job((one_process[0], one_process[1]), (result_resumed, resumed))


@pytest.mark.timeout(90)
def test_a_process_killed_with_no_restarts_left_fails_the_run_not_hangs_it(
    files: dict[str, Any], tmp_path: Path
) -> None:
    def kill_a_rank(event: Event) -> None:
        if event.type == "metrics" and event.data["step"] == 2:
            (torchrun,) = [
                p for p in psutil.Process().children() if "torch.distributed.run" in " ".join(p.cmdline())
            ]
            os.kill(torchrun.children()[-1].pid, signal.SIGKILL)

    with pytest.raises(TrainingProcessesFailed, match="gave up restarting"):
        run_in_processes(job_spec(2), tmp_path / "out", **files, on_event=kill_a_rank, max_restarts=0)
    assert not (tmp_path / "out").exists()
    assert [
        p for p in psutil.Process().children(recursive=True) if "tuning.distributed" in " ".join(p.cmdline())
    ] == []
