"""/v1/jobs/{id}/pause and /resume: stop a job at a step boundary with a resume point, and go on later."""

from fastapi import APIRouter

from service.deps import CeleryDep, CurrentOwner, SessionDep
from service.pausing import pause_job, resume_job
from service.routes.jobs import full_job_object, owned_job
from service.schemas.common import error_responses
from service.schemas.jobs import JobObject

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 404, 409, 413, 422, 500, 503)
)


@router.post("/{job_id}/pause")
def pause(job_id: str, owner: CurrentOwner, session: SessionDep) -> JobObject:
    """Pause a job: a queued one at once; a running one keeps a resume point at its next step and stops."""
    job = pause_job(session, owned_job(session, owner.id, job_id))
    return full_job_object(session, job)


@router.post("/{job_id}/resume")
def resume(job_id: str, owner: CurrentOwner, session: SessionDep, celery: CeleryDep) -> JobObject:
    """Resume a paused job: it is queued again and goes on from its resume point."""
    job = resume_job(session, celery, owned_job(session, owner.id, job_id))
    return full_job_object(session, job)
