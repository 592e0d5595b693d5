"""One job, start to end: claim, re-read, train in a scratch folder, publish, record the outcome.

Everything is re-read from the database by id, so a repeated delivery is harmless (the claim loses)
and the worker needs nothing but the id. Every claimed job ends in a recorded status, whatever goes
wrong, and its scratch folder is always removed.
"""

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

import tuning
from core.models import Job, JobStatus
from core.settings import Settings
from tuning.errors import Cancelled
from tuning.spec import JobSpec
from worker.checkpoints import CheckpointPublisher, checkpoint_folder
from worker.job_models import base_model_dirs
from worker.lifecycle import INTERNAL_ERROR, JOBS, CancelPoller, JobFailure
from worker.progress import ProgressRecorder
from worker.publish import publish_artifact

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInputs:
    spec: JobSpec
    training_path: Path
    validation_path: Path | None
    fisher_path: Path | None  # ewc's source-task file
    start_from: Path | None  # from_checkpoint: the checkpoint's artifact folder
    model_dirs: list[Path]  # where base models are found, finished jobs' models included


def run_job(job_id: str, *, settings: Settings, sessions: sessionmaker[Session], worker: str) -> str | None:
    """Run the job if this delivery claims it; returns its final status, or None when not claimed."""
    if not JOBS.claim(sessions, job_id, worker=worker):
        logger.info("job %s was not queued (already claimed, cancelled or unknown): nothing to do", job_id)
        return None
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=settings.work_dir))
    try:
        return _run_claimed(job_id, settings=settings, sessions=sessions, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_claimed(job_id: str, *, settings: Settings, sessions: sessionmaker[Session], scratch: Path) -> str:
    try:
        inputs = load_inputs(sessions, job_id, settings=settings)
        result = tuning.run(
            inputs.spec,
            scratch / "out",
            training_path=inputs.training_path,
            validation_path=inputs.validation_path,
            fisher_path=inputs.fisher_path,
            model_dirs=inputs.model_dirs,
            start_from=inputs.start_from,
            on_checkpoint=CheckpointPublisher(sessions, job_id, checkpoints_dir=settings.checkpoints_dir),
            on_event=ProgressRecorder(sessions, job_id),
            should_stop=CancelPoller(sessions, job_id, every_seconds=settings.cancel_poll_seconds),
        )
        publish_artifact(
            sessions, job_id, out_dir=scratch / "out", artifacts_dir=settings.artifacts_dir, result=result
        )
        return JobStatus.SUCCEEDED
    except Cancelled:
        JOBS.cancel(sessions, job_id)
        return JobStatus.CANCELLED
    except Exception as error:
        JOBS.fail(sessions, job_id, error)
        return JobStatus.FAILED


def load_inputs(sessions: sessionmaker[Session], job_id: str, *, settings: Settings) -> JobInputs:
    """The job's spec, re-validated as stored, the paths of its data files, and where its base is."""
    files_dir = settings.files_dir
    with sessions() as session:
        job = session.get(Job, job_id)
        stored_spec = job.spec if job is not None else None
    if stored_spec is None:
        raise JobFailure(INTERNAL_ERROR, f"job {job_id} disappeared after it was claimed")
    try:
        # The spec may predate a change to JobSpec: the job runs only if it is still valid today.
        spec = JobSpec.model_validate(stored_spec)
    except ValidationError as error:
        raise JobFailure("invalid_spec", f"the stored job spec is no longer valid: {error}") from error
    training_path = _file_path(files_dir, spec.training_file, param="training_file")
    validation_path = (
        _file_path(files_dir, spec.validation_file, param="validation_file") if spec.validation_file else None
    )
    ewc = spec.regularizers.ewc
    fisher_path = (
        _file_path(files_dir, ewc.fisher_file, param="regularizers.ewc.fisher_file")
        if ewc is not None and ewc.fisher_file is not None
        else None
    )
    start_from = checkpoint_folder(sessions, settings, spec.from_checkpoint) if spec.from_checkpoint else None
    return JobInputs(
        spec,
        training_path,
        validation_path,
        fisher_path,
        start_from,
        base_model_dirs(sessions, settings, spec),
    )


def _file_path(files_dir: Path, file_id: str, *, param: str) -> Path:
    path = files_dir / file_id
    if not path.is_file():
        raise JobFailure("file_not_found", f"file {file_id} is missing from the file store", param=param)
    return path
