"""Hand committed work to the workers. Only called after the row's transaction commits."""

from celery import Celery

RUN_JOB_TASK = "deltatune.run_job"
SCORE_TRANSFERABILITY_TASK = "deltatune.score_transferability"


def enqueue_job(celery: Celery, job_id: str, queue: str) -> None:
    # By name, so the API process never imports the worker's torch-heavy task module.
    celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def enqueue_transferability(celery: Celery, run_id: str, queue: str) -> None:
    celery.send_task(SCORE_TRANSFERABILITY_TASK, args=[run_id], queue=queue)
