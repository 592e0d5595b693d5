"""Hand a committed job to the workers. Only called after the job row's transaction commits."""

from celery import Celery

RUN_JOB_TASK = "deltatune.run_job"


def enqueue_job(celery: Celery, job_id: str, queue: str) -> None:
    # By name, so the API process never imports the worker's torch-heavy task module.
    celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
