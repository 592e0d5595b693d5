"""`tuning.run`: one fine-tuning job from data files to an artifact folder, callable from a shell.

`tuning.fit` does the work in named phases (prepare, train, finish); `run` adds the last one,
export: the artifact is written only once training has finished, so a failed or cancelled run leaves
`out_dir` as it found it. The API imports this module (through `tuning`), so it imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.resume import ResumeOptions
from tuning.spec import JobSpec

if TYPE_CHECKING:
    from tuning.checkpoints import CheckpointSink
    from tuning.distribution import Ranks


@dataclass(frozen=True)
class RunResult:
    metrics: dict[str, float]
    examples_seen: int
    trained_tokens: int
    steps: int
    files: list[str]  # names written into out_dir


def run(
    spec: JobSpec,
    out_dir: Path,
    *,
    training_path: Path,
    validation_path: Path | None = None,
    fisher_path: Path | None = None,
    model_dirs: Sequence[Path] = (),
    start_from: Path | None = None,
    on_checkpoint: CheckpointSink | None = None,
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
    resume: ResumeOptions | None = None,
    resume_from: Path | None = None,
    ranks: Ranks | None = None,
) -> RunResult:
    """Fine-tune `spec.base_model` on `training_path` and write the artifact into `out_dir`.

    `fisher_path` is the source-task file of an `ewc` regularizer; `start_from` a checkpoint's
    artifact folder whose trained tensors the job starts from (`from_checkpoint`). With
    `spec.checkpoints`, each checkpoint is written beside `out_dir` as an artifact and handed to
    `on_checkpoint`. With `resume`, resume points are written beside `out_dir` (`<out_dir>-resume/
    step-<k>/`) and handed to `resume.on_resume_point`; `resume_from`, one of this job's points,
    continues the job at the step after it, as if it had never stopped (tuning.resume). Raises
    DataError, SpecError, ModelNotFound, ResumeMismatch, or Cancelled when `should_stop()` turns true.
    `ranks` is rank 0 of the processes that train the job together (tuning.distributed starts them;
    tuning.launch.run_in_processes is this function's counterpart for a job of several processes).
    """
    # torch and transformers load here, not when the API imports tuning.
    from tuning.artifacts import write_artifact
    from tuning.distribution import SINGLE
    from tuning.fit import fit

    fitted = fit(
        spec,
        training_path=training_path,
        validation_path=validation_path,
        fisher_path=fisher_path,
        model_dirs=model_dirs,
        start_from=start_from,
        checkpoints_dir=out_dir.with_name(out_dir.name + "-checkpoints"),
        on_checkpoint=on_checkpoint,
        resume=resume,
        resume_dir=out_dir.with_name(out_dir.name + "-resume"),
        resume_from=resume_from,
        on_event=on_event,
        should_stop=should_stop,
        ranks=ranks or SINGLE,
    )
    # Said in the user's words: the scratch folder's name means nothing to a client.
    on_event(Event("message", "training finished; writing the artifact", {}))
    files = write_artifact(out_dir, fitted.job)
    result = fitted.result
    return RunResult(
        dict(fitted.job.metrics), result.examples_seen, result.trained_tokens, result.steps, files
    )
