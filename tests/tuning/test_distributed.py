"""A job on 2 processes (torchrun, gloo, DDP) ends as the same job on 1: same weights, same metrics; and
a resume point written by 2 processes resumes on 1; a process killed when no restart is left fails the
run, never hangs it (tests/worker/test_training_processes.py kills one, and the job goes on).

The 2-process runs are real: torchrun starts them and tuning.launch serves rank 0 (a few seconds of
imports each, so few launches). tests.tuning.distributed_jobs says why they agree, and how closely.
"""

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.tuning.distributed_jobs import ATOL, Seen, assert_same_job, job_spec
from tuning import Event, ResumeOptions, RunResult, run
from tuning.launch import TrainingProcessesFailed, run_in_processes


@pytest.mark.timeout(120)
def test_two_processes_end_as_one(
    nodrop_files: dict[str, Any], one_process: tuple[RunResult, Path, Seen], tmp_path: Path
) -> None:
    seen = Seen(tmp_path / "kept")
    result = run_in_processes(
        job_spec(2, max_examples_per_device=2),  # and each share in passes: 4 as 2 + 2, 3 as 2 + 1
        tmp_path / "out",
        **nodrop_files,
        on_event=seen.on_event,
        on_checkpoint=seen.on_checkpoint,
        resume=ResumeOptions(every_steps=3, on_resume_point=seen.keep),
    )
    largest = assert_same_job((one_process[0], one_process[1]), (result, tmp_path / "out"))
    print(f"1 vs 2 processes: largest weight difference {largest:.3g}")
    told = [event.data for event in seen.events if "processes" in event.data]
    assert told == [{"processes": 2, "parallelism": "ddp", "backend": "gloo"}]  # the reader learns how
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
    result_resumed = run(job_spec(1), resumed, **nodrop_files, resume_from=seen.points[1].folder)
    assert_same_job((one_process[0], one_process[1]), (result_resumed, resumed))


@pytest.mark.timeout(90)
def test_a_process_killed_with_no_restarts_left_fails_the_run_not_hangs_it(
    nodrop_files: dict[str, Any], tmp_path: Path
) -> None:
    def kill_a_rank(event: Event) -> None:
        if event.type == "metrics" and event.data["step"] == 2:
            (torchrun,) = [
                p for p in psutil.Process().children() if "torch.distributed.run" in " ".join(p.cmdline())
            ]
            os.kill(torchrun.children()[-1].pid, signal.SIGKILL)

    with pytest.raises(TrainingProcessesFailed, match="no restart is left"):
        run_in_processes(job_spec(2), tmp_path / "out", **nodrop_files, on_event=kill_a_rank, max_restarts=0)
    assert not (tmp_path / "out").exists()
    assert [
        p for p in psutil.Process().children(recursive=True) if "tuning.distributed" in " ".join(p.cmdline())
    ] == []
