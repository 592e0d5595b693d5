"""The worker's Celery app, for `celery -A worker.app worker`: dispatch's app plus the task modules.

Built at import from settings, which touches nothing on disk; the filesystem broker's folders are
made when the worker starts (`worker_init`), before it consumes.
"""

from typing import Any

from celery.signals import worker_init

from core.dispatch import make_celery, prepare_broker
from core.settings import get_settings

# `celery -A worker.app` imports only this module; `include` makes the worker register the tasks and
# connect its pool processes' exit hook (worker/pool_exit.py).
TASK_MODULES = ("worker.tasks", "worker.pool_exit")

celery_app = make_celery(get_settings(), include=TASK_MODULES)


@worker_init.connect
def prepare_broker_on_start(sender: Any = None, **_: Any) -> None:
    prepare_broker(getattr(sender, "app", None) or celery_app)
