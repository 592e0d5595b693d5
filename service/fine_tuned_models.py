"""The names OpenAI's API gives a job's model, `ft:<base>:<owner>:<suffix>:<job id>`, and back.

The job id is the last part, so a name always leads to its job; deltatune's own base_model for a
later job is that id (service.base_models resolves it). A plain job id is accepted as well.
"""

from core.models import Job, JobStatus, is_job_id
from service.errors import NotFound
from tuning.spec import MERGEABLE_METHODS, JobSpec

PREFIX = "ft:"
SUFFIX_KEY = "suffix"  # the metadata key that keeps the create request's `suffix`


def fine_tuned_model(job: Job, owner_name: str) -> str | None:
    """The model a succeeded job made, when it can be a base model (a plain model once merged)."""
    if job.status != JobStatus.SUCCEEDED or job.method not in MERGEABLE_METHODS:
        return None
    suffix = JobSpec.model_validate(job.spec).metadata.get(SUFFIX_KEY, "")
    return f"{PREFIX}{job.base_model}:{owner_name}:{suffix}:{job.id}"


def checkpoint_model(job: Job, owner_name: str, step: int) -> str:
    """OpenAI's name of a checkpoint's model: the job's model name and the step."""
    suffix = JobSpec.model_validate(job.spec).metadata.get(SUFFIX_KEY, "")
    return f"{PREFIX}{job.base_model}:{owner_name}:{suffix}:{job.id}:ckpt-step-{step}"


def job_id_of(name: str) -> str | None:
    """The job a model name names (`ft:...:<job id>` or the job id itself); None for any other name."""
    if name.startswith(PREFIX):
        last = name.rsplit(":", 1)[-1]
        return last if is_job_id(last) else None
    return name if is_job_id(name) else None


def base_model_of(name: str, *, param: str = "model") -> str:
    """What deltatune's base_model is for OpenAI's `model`: the job id of a fine-tuned model's name."""
    if not name.startswith(PREFIX):
        return name
    job_id = job_id_of(name)
    if job_id is None:
        raise NotFound(
            f"{param}: {name!r} is not a fine-tuned model name (ft:<base>:<owner>:<suffix>:<job id>)",
            param=param,
            code="model_not_found",
        )
    return job_id
