"""Finished jobs' models as base models: made loadable on the worker before a job that builds on one.

A job whose base_model is another job's id trains on that job's merged model, saved once into
`data_dir/job-models/<job id>/` as a plain transformers model (each worker host keeps its own: it is
made again from the stored artifact wherever it is missing). A directory model's id is its folder
name, so with that folder first in the model directories `tuning.run` finds the job id like any
other base model. The source may itself build on a job (a chain): its base is made first.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.models import MAX_JOB_CHAIN, Job, JobStatus, is_job_id
from core.settings import Settings
from core.storage import Storage
from core.storage.keys import artifact_prefix
from tuning.artifacts.plain_model import export_plain_model
from tuning.spec import JobSpec
from worker.lifecycle import JobFailure

logger = logging.getLogger(__name__)


def job_models_dir(settings: Settings) -> Path:
    return settings.data_dir / "job-models"


def base_model_dirs(
    sessions: sessionmaker[Session], settings: Settings, storage: Storage, spec: JobSpec
) -> list[Path]:
    """The model directories `tuning.run` searches for `spec.base_model`."""
    if not is_job_id(spec.base_model):
        return list(settings.model_dirs)
    materialize_job_model(sessions, settings, storage, spec.base_model)
    return [job_models_dir(settings), *settings.model_dirs]


def materialize_job_model(
    sessions: sessionmaker[Session], settings: Settings, storage: Storage, job_id: str
) -> Path:
    """The folder of `job_id`'s plain model, exported first if no worker has done it yet."""
    chain = _chain(sessions, job_id)
    model_dirs = [job_models_dir(settings), *settings.model_dirs]
    # The root's first: each job's artifact is rebuilt on the model of the job before it.
    for link, attempt in reversed(chain):
        _export_once(settings, storage, link, attempt, model_dirs)
    return job_models_dir(settings) / job_id


def _chain(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, int]]:
    """`job_id`, the job it built on, and so on down to the last one on a catalogue model; each with
    the attempt that published its artifact."""
    chain: list[tuple[str, int]] = []
    following = job_id
    with sessions() as session:
        while len(chain) <= MAX_JOB_CHAIN:
            job = session.get(Job, following)
            if job is None or job.status != JobStatus.SUCCEEDED:
                raise JobFailure(
                    "invalid_base_model",
                    f"base model {following!r} is not a succeeded job's model",
                    param="base_model",
                )
            chain.append((following, job.attempt))
            if not is_job_id(job.base_model):
                return chain
            following = job.base_model
    raise JobFailure("invalid_base_model", f"base model {job_id!r} builds on too long a chain of jobs")


def _export_once(
    settings: Settings, storage: Storage, job_id: str, attempt: int, model_dirs: list[Path]
) -> None:
    target = job_models_dir(settings) / job_id
    if (target / "config.json").is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # Exported beside the target and renamed in one step: a reader sees the whole model or none.
    scratch = Path(tempfile.mkdtemp(prefix=f".{job_id}-", dir=target.parent))
    try:
        logger.info("exporting job %s's model as a base model", job_id)
        artifact = storage.local_folder(artifact_prefix(job_id, attempt), scratch / "artifact")
        if artifact is None:
            raise JobFailure(
                "invalid_base_model",
                f"base model {job_id!r}: its artifact is missing from storage",
                param="base_model",
            )
        export_plain_model(artifact, scratch / "model", model_dirs)
        try:
            (scratch / "model").rename(target)
        except OSError:
            # Another worker renamed its export first; theirs is the same model.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
