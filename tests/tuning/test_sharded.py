"""`full` on 2 processes trains sharded (FSDP2 over gloo) and ends as the same job on 1: same weights,
metrics and events, checkpoints, early stopping's best weights, an artifact (the dense delta and a
merged export) that loads to the same outputs; its resume points hold the whole state, so a point
written by 2 processes resumes on 1, and one written by 1 resumes on 2.

Real processes, as in test_distributed (two torchrun launches in all). Metrics and outputs agree within
tests.tuning.distributed_jobs' ATOL; the weights within FULL_ATOL, as the same job does in one process
trained in passes (gradient accumulation): `full` trains the attention's key biases too, whose gradient
is zero in exact arithmetic (softmax ignores a number added to all of a query's scores), so Adam, which
divides each gradient by its own size, steps them by their rounding noise, which differs with the
summation order (2e-4 apart for passes in one process, 3e-4 for two processes). They change no output,
so the outputs, not they, are compared; the rest rides on that noise a little (1.3e-5 apart).
"""

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from tests.tuning.distributed_jobs import ATOL, Seen, assert_same_job, job_spec, on_one_process, weights
from tests.tuning.test_spec_tasks import refused
from tuning import JobSpec, ResumeOptions, RunResult, load_artifact, predict_logits, run
from tuning.launch import run_in_processes

FULL_ATOL = 3e-5
KEY_BIAS = "attention.self.key.bias"  # unconstrained by the loss: module docstring
TEXTS = ["a great and lovely film", "dull, slow and bad", "fine"]


def full_spec(processes: int, max_examples_per_device: int | None = None) -> JobSpec:
    """The distributed tests' job with every weight trained, and a merged export besides the delta."""
    fields = job_spec(processes, max_examples_per_device).model_dump(exclude_none=True)
    fields |= {"method": {"type": "full"}, "export": {"merged": True}}
    # Step 7's accuracy is not beaten at step 14: the best weights are kept (whole in later resume
    # points) and put back at the end.
    fields["early_stopping"] = {"metric": "accuracy", "patience": 1}
    return JobSpec.model_validate(fields)


@pytest.fixture(scope="module")
def one_full(
    nodrop_files: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Path, Seen]:
    return on_one_process(full_spec(1), tmp_path_factory.mktemp("full-one") / "out", nodrop_files)


def assert_same_full_job(a: tuple[RunResult, Path], b: tuple[RunResult, Path]) -> float:
    return assert_same_job(a, b, weights_atol=FULL_ATOL, unconstrained=KEY_BIAS)


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b) and a
    for name, tensor in a.items():
        if KEY_BIAS not in name:
            assert torch.allclose(b[name], tensor, rtol=0, atol=FULL_ATOL), name


def logits(out: Path, model_dirs: list[Path]) -> torch.Tensor:
    return predict_logits(load_artifact(out, model_dirs, device=torch.device("cpu")), TEXTS)


def merged_weights(out: Path) -> dict[str, torch.Tensor]:
    return AutoModelForSequenceClassification.from_pretrained(out / "merged").state_dict()


@pytest.mark.timeout(120)
def test_full_on_two_processes_ends_as_on_one(
    nodrop_files: dict[str, Any], one_full: tuple[RunResult, Path, Seen], tmp_path: Path
) -> None:
    one_result, one_out, one_seen = one_full
    seen = Seen(tmp_path / "kept")
    two_out = tmp_path / "out"
    result = run_in_processes(
        full_spec(2, max_examples_per_device=2),  # shares in passes: FSDP's gradient sync on the last
        two_out,
        **nodrop_files,
        on_event=seen.on_event,
        on_checkpoint=seen.on_checkpoint,
        resume=ResumeOptions(every_steps=3, on_resume_point=seen.keep),
    )
    largest = assert_same_full_job((one_result, one_out), (result, two_out))
    print(f"full, 1 vs 2 processes (FSDP): largest weight difference {largest:.3g}")
    one_steps, two_steps = one_seen.steps(), seen.steps()
    assert [s[:2] for s in one_steps] == [s[:2] for s in two_steps]
    for (_, _, a), (_, _, b) in zip(one_steps, two_steps, strict=True):
        for key, value in a.items():
            assert b[key] == (pytest.approx(value, abs=ATOL) if isinstance(value, float) else value), key
    # Checkpoints: every process gathers the weights, rank 0 writes them.
    one_checkpoints, two_checkpoints = one_seen.checkpoints, seen.checkpoints
    assert [c[:2] for c in two_checkpoints] == [c[:2] for c in one_checkpoints] == [(7, []), (14, [7])]
    for (_, _, a), (_, _, b) in zip(one_checkpoints, two_checkpoints, strict=True):
        assert b == pytest.approx(a, abs=ATOL)
    last = "out-checkpoints/step-00000014"  # the one kept; an artifact like the job's own
    assert_close_weights(weights(one_out.parent / last), weights(tmp_path / last))
    # The artifact rank 0 wrote from the gathered weights: tuning's loader and the merged export.
    model_dirs = nodrop_files["model_dirs"]
    assert torch.allclose(logits(two_out, model_dirs), logits(one_out, model_dirs), rtol=0, atol=ATOL)
    assert_close_weights(merged_weights(one_out), merged_weights(two_out))
    # Rank 0's points hold the whole weights and optimizer moments, as one process writes them.
    assert [point.step for point in seen.points] == [point.step for point in one_seen.points] == [3, 6, 9, 12]
    resumed = tmp_path / "resumed"
    result_resumed = run(full_spec(1), resumed, **nodrop_files, resume_from=seen.points[1].folder)
    assert_same_full_job((one_result, one_out), (result_resumed, resumed))


@pytest.mark.timeout(120)
def test_a_point_written_by_one_process_resumes_sharded_on_two(
    nodrop_files: dict[str, Any], one_full: tuple[RunResult, Path, Seen], tmp_path: Path
) -> None:
    one_result, one_out, one_seen = one_full
    out = tmp_path / "out"
    result = run_in_processes(full_spec(2), out, **nodrop_files, resume_from=one_seen.points[2].folder)
    assert result.metrics  # the resumed job's metrics; its weights as the uninterrupted job's
    assert_same_full_job((one_result, one_out), (result, out))


@pytest.mark.parametrize("name", ["regularizers.l2sp", "regularizers.ewc"])
def test_what_reads_whole_weights_alone_is_refused(name: str) -> None:
    fields = full_spec(2).model_dump(exclude_none=True)
    part = {
        "regularizers.l2sp": ("regularizers", {"l2sp": {"weight": 0.01}}),
        "regularizers.ewc": ("regularizers", {"ewc": {"weight": 0.01, "fisher_file": "file-fisher"}}),
    }[name]
    fields[part[0]] = part[1]
    assert refused(fields).param == name
    fields["resources"]["processes"] = 1
    JobSpec.model_validate(fields)  # one process holds the whole weights: allowed
