"""Hand a committed job to the workers. Only called after the job row's transaction commits."""

from worker.app import celery_app

RUN_JOB_TASK = "deltatune.run_job"


def enqueue_job(job_id: str, queue: str) -> None:
    # By name, so the API process never imports the worker's torch-heavy task module.
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
