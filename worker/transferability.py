"""One transferability run, start to end: claim it, score its candidates, record the ranking or the error.

Like a job, the run is re-read by id, so a repeated delivery is harmless (the claim loses); its
attempt holds a lease its heartbeat renews, and every claimed run it keeps ends `succeeded` or
`failed` with a message, whatever goes wrong.
"""

import logging
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.models import JobStatus, TransferabilityRun
from core.settings import Settings
from core.storage import open_storage
from core.storage.keys import file_key
from tuning.models import resolve_base_model
from tuning.spec.transferability import TransferabilityRequest
from tuning.transferability import Candidate, read_scoring_data, score_candidates
from worker.heartbeat import Heartbeat
from worker.lifecycle import INTERNAL_ERROR, RUNS, JobFailure, LostLease

logger = logging.getLogger(__name__)


def score_run(run_id: str, *, settings: Settings, sessions: sessionmaker[Session], worker: str) -> str | None:
    """Run it if this delivery claims it; returns the final status, or None when not claimed (or lost)."""
    attempt = RUNS.claim(
        sessions,
        run_id,
        worker=worker,
        lease_seconds=settings.lease_seconds,
        outage_seconds=settings.database_outage_seconds,
    )
    if attempt is None:
        logger.info("transferability run %s was not queued (already claimed or unknown)", run_id)
        return None
    try:
        with Heartbeat(attempt, every_seconds=settings.heartbeat_seconds) as heartbeat:
            try:
                results = _score(sessions, run_id, settings)
            except Exception as error:
                if heartbeat.lost:
                    raise LostLease(str(error)) from error
                attempt.fail(error)
                return JobStatus.FAILED
            attempt.succeed(results=results)
            return JobStatus.SUCCEEDED
    except LostLease as lost:
        logger.warning("%s stopped: %s", attempt.describe(), lost)
        return None


def _score(sessions: sessionmaker[Session], run_id: str, settings: Settings) -> list[dict[str, Any]]:
    request = _load_request(sessions, run_id)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{run_id}-", dir=settings.work_dir) as scratch:
        try:
            path = open_storage(settings).local_file(file_key(request.training_file), Path(scratch))
        except FileNotFoundError:
            raise JobFailure(
                "file_not_found", f"file {request.training_file} is missing from the file store"
            ) from None
        texts, labels = read_scoring_data(path, request.task, max_examples=request.max_examples)
    candidates = [
        Candidate(name, resolve_base_model(name, settings.model_dirs)) for name in request.base_models
    ]
    return score_candidates(texts, labels, candidates, request.task)


def _load_request(sessions: sessionmaker[Session], run_id: str) -> TransferabilityRequest:
    with sessions() as session:
        run = session.get(TransferabilityRun, run_id)
        stored = run.request if run is not None else None
    if stored is None:
        raise JobFailure(INTERNAL_ERROR, f"transferability run {run_id} disappeared after it was claimed")
    return TransferabilityRequest.model_validate(stored)
