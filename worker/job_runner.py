"""One job, start to end: claim an attempt, re-read, train in a scratch folder, publish, record.

Everything is re-read from the database by id, so a repeated delivery is harmless (the claim loses)
and the worker needs nothing but the id. The attempt holds a lease its heartbeat renews; every write
it makes is fenced by its number (worker.lifecycle), and one that lost its job stops and writes
nothing. The job's files, its checkpoints, resume points and artifact live in the store
(core.storage), which may be another host's: what training reads is fetched into the scratch folder
first, and an outage of the store is waited out for `storage_outage_seconds` before the job fails.
Training writes resume points into the job's resume folder (worker.resume_store), and an
attempt after one that died, here or on another host, goes on from the latest. Every claimed job
that keeps its attempt ends in a recorded status, whatever goes wrong, and the attempt's scratch
folder is always removed.
"""

import itertools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

import tuning
from core.models import Job, JobStatus
from core.settings import Settings
from core.storage import Storage, open_storage
from core.storage.keys import file_key
from core.storage.retrying import RetryingStorage
from tuning.errors import Cancelled, ResumeMismatch
from tuning.resume import ResumeOptions, ResumePoint
from tuning.run import RunResult
from tuning.spec import JobSpec
from worker.checkpoints import CheckpointPublisher, checkpoint_folder
from worker.heartbeat import Heartbeat, StopReason
from worker.job_models import base_model_dirs
from worker.lifecycle import INTERNAL_ERROR, JOBS, Attempt, JobFailure, LostLease, database_outage
from worker.progress import ProgressRecorder
from worker.publish import publish_artifact
from worker.resume_store import ResumeStore
from worker.scratch import clear_dead_attempts, scratch_folder

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
    """Run the job if this delivery claims it; returns its final status, or None when it did not claim
    it or lost it to another attempt."""
    attempt = JOBS.claim(
        sessions,
        job_id,
        worker=worker,
        lease_seconds=settings.lease_seconds,
        outage_seconds=settings.database_outage_seconds,
    )
    if attempt is None:
        logger.info("job %s was not queued (already claimed, cancelled or unknown): nothing to do", job_id)
        return None
    if attempt.number > 1:
        clear_dead_attempts(settings, job_id, current=attempt.number)
    storage = RetryingStorage(open_storage(settings), outage_seconds=settings.storage_outage_seconds)
    scratch = scratch_folder(settings, job_id, attempt.number)
    scratch.mkdir(parents=True)
    try:
        with Heartbeat(attempt, every_seconds=settings.heartbeat_seconds) as heartbeat:
            status = _run_claimed(
                attempt,
                settings=settings,
                storage=storage,
                sessions=sessions,
                scratch=scratch,
                heartbeat=heartbeat,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if status is not None and status != JobStatus.PAUSED:
        ResumeStore(storage, job_id).remove()  # ended: nothing will resume it
    return status


def _run_claimed(
    attempt: Attempt,
    *,
    settings: Settings,
    storage: Storage,
    sessions: sessionmaker[Session],
    scratch: Path,
    heartbeat: Heartbeat,
) -> str | None:
    job_id = attempt.row_id
    resume_store = ResumeStore(storage, job_id)
    keeper = resume_store.keeper(attempt)

    def keep_point(point: ResumePoint) -> None:
        keeper(point)
        heartbeat.point_kept(point.step)  # stored first: a pause stops only once it can resume there

    restarts = itertools.count(1)

    def latest_point() -> ResumePoint | None:
        """After the job's processes died, the latest point kept, fetched anew for their restart."""
        return resume_store.latest(scratch / f"resume-from-restart-{next(restarts)}")

    def train(point: ResumePoint | None) -> RunResult:
        inputs = load_inputs(sessions, job_id, settings=settings, storage=storage, scratch=scratch / "inputs")
        if point is not None:
            logger.info("%s resumes from step %d", attempt.describe(), point.step)
        processes = inputs.spec.resources.processes
        common: dict[str, Any] = {
            "training_path": inputs.training_path,
            "validation_path": inputs.validation_path,
            "fisher_path": inputs.fisher_path,
            "model_dirs": inputs.model_dirs,
            "start_from": inputs.start_from,
            "on_checkpoint": CheckpointPublisher(attempt, storage=storage),
            "on_event": ProgressRecorder(attempt),
            "should_stop": heartbeat.should_stop,
            "resume": ResumeOptions(
                every_steps=settings.resume_every_steps,
                every_seconds=settings.resume_every_seconds,
                due_now=heartbeat.pause_wanted,
                on_resume_point=keep_point,
            ),
            "resume_from": point.folder if point is not None else None,
        }
        if processes == 1:
            return tuning.run(inputs.spec, scratch / "out", **common)
        from tuning.distribution import processes_offered  # torch: loaded only for such a job
        from tuning.launch import run_in_processes

        offered = processes_offered(settings.worker_max_processes_per_job)
        if processes > offered:  # queued before the workers offered fewer
            raise JobFailure(
                "too_many_processes",
                f"resources.processes is {processes}; this worker gives a job at most {offered}",
                param="resources.processes",
            )
        return run_in_processes(
            inputs.spec,
            scratch / "out",
            **common,
            latest_resume_point=latest_point,
            max_restarts=settings.worker_process_restarts,
        )

    try:
        try:
            point = resume_store.latest(scratch / "resume-from")
            try:
                result = train(point)
            except ResumeMismatch:
                if point is None:
                    raise
                # Written by another deltatune (its format) or for other inputs: start over instead.
                logger.warning("%s cannot resume from step %d; starting over", attempt.describe(), point.step)
                resume_store.remove()
                result = train(None)
            if heartbeat.should_stop() and heartbeat.reason is not StopReason.PAUSE_REQUESTED:
                raise Cancelled()  # asked to stop after the last step: treated as if before it
            # A pause whose point is the last step's comes too late to matter: the job is done.
            publish_artifact(attempt, out_dir=scratch / "out", storage=storage, result=result)
            return JobStatus.SUCCEEDED
        except Cancelled:
            if heartbeat.reason is StopReason.LOST_LEASE:
                raise LostLease(f"{attempt.describe()} lost its lease") from None
            if heartbeat.reason is StopReason.DATABASE_OUTAGE:
                attempt.fail(database_outage(settings.database_outage_seconds))
                return JobStatus.FAILED
            paused_at = heartbeat.paused_at if heartbeat.reason is StopReason.PAUSE_REQUESTED else None
            if paused_at is not None and attempt.pause(step=paused_at):
                return JobStatus.PAUSED
            # Else a cancel, or one asked while it paused: the cancel wins.
            attempt.cancel()
            return JobStatus.CANCELLED
        except LostLease:
            raise
        except Exception as error:
            if heartbeat.lost:  # whatever broke, the job is another attempt's now
                raise LostLease(f"{attempt.describe()} lost its lease") from error
            attempt.fail(error)
            return JobStatus.FAILED
    except LostLease as lost:
        logger.warning("%s stopped: %s; another attempt has the job, or it ended", attempt.describe(), lost)
        return None
    except Exception:
        # Not even the failure could be recorded (the database gone for good): the lease expires and
        # a sweep queues the job again.
        logger.exception("%s: its outcome could not be recorded", attempt.describe())
        return None


def load_inputs(
    sessions: sessionmaker[Session], job_id: str, *, settings: Settings, storage: Storage, scratch: Path
) -> JobInputs:
    """The job's spec, re-validated as stored, local paths of its data files (the stored ones, or
    downloads into `scratch`), and where its base is."""
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

    def data_file(file_id: str | None, param: str) -> Path | None:
        return None if file_id is None else _file_path(storage, file_id, scratch, param=param)

    ewc = spec.regularizers.ewc
    start_from = (
        checkpoint_folder(sessions, storage, spec.from_checkpoint, scratch=scratch)
        if spec.from_checkpoint
        else None
    )
    return JobInputs(
        spec,
        _file_path(storage, spec.training_file, scratch, param="training_file"),
        data_file(spec.validation_file, "validation_file"),
        data_file(ewc.fisher_file if ewc is not None else None, "regularizers.ewc.fisher_file"),
        start_from,
        base_model_dirs(sessions, settings, storage, spec),
    )


def _file_path(storage: Storage, file_id: str, scratch: Path, *, param: str) -> Path:
    try:
        return storage.local_file(file_key(file_id), scratch)
    except FileNotFoundError:
        raise JobFailure(
            "file_not_found", f"file {file_id} is missing from the file store", param=param
        ) from None
