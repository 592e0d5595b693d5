"""/healthz (the process lives) and /readyz (the database and the broker answer, the data folder takes
a write, the object store answers when there is one); no auth."""

import logging
import tempfile

from celery import Celery
from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.orm import Session

from core.settings import Settings
from core.storage import Storage
from core.storage.local import LocalStorage
from service.deps import CeleryDep, SessionDep, SettingsDep, StorageDep
from service.errors import ApiError
from service.schemas.common import error_responses
from service.schemas.health import Health, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"], responses=error_responses(500))

BROKER_TIMEOUT_SECONDS = 2.0
# A probe of one page: an empty file only needs an inode, which a full disk may still have.
PROBE_BYTES = 4096


@router.get("/healthz")
def healthz() -> Health:
    """Answer as long as the process is alive."""
    return Health()


@router.get("/readyz", responses=error_responses(503))
def readyz(session: SessionDep, settings: SettingsDep, storage: StorageDep, celery: CeleryDep) -> Readiness:
    """Check that the database and the broker are reachable and the data folder writable; 503 names
    what is not."""
    problems = {
        "database": _database_problem(session),
        "broker": _broker_problem(settings, celery),
        "storage": _storage_problem(settings, storage),
    }
    down = {name: problem for name, problem in problems.items() if problem}
    if down:
        reasons = "; ".join(
            f"{name} {'not writable' if name == 'storage' else 'unreachable'} ({problem})"
            for name, problem in down.items()
        )
        raise ApiError(
            f"not ready: {reasons}",
            status_code=503,
            param=next(iter(down)),
            code="not_ready",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return Readiness(checks={name: "ok" for name in problems})


def _database_problem(session: Session) -> str | None:
    try:
        session.execute(text("SELECT 1"))
    except Exception as error:
        logger.warning("readiness: database check failed: %s", error)
        return type(error).__name__
    return None


def _broker_problem(settings: Settings, celery: Celery) -> str | None:
    if settings.uses_filesystem_broker:
        return _folder_problem(settings)
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as error:
        logger.warning("readiness: broker check failed: %s", error)
        return type(error).__name__
    return None


def _storage_problem(settings: Settings, storage: Storage) -> str | None:
    """The first folder of the data dir that cannot take a small write, named relative to it (the
    server's paths are not the client's business), or what keeps the object store from answering."""
    folders = {"data folder": settings.data_dir, "work/": settings.work_dir}
    if isinstance(storage, LocalStorage):  # else files and artifacts live in the object store
        folders |= {"files/": settings.files_dir, "artifacts/": settings.artifacts_dir}
    for name, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)  # a fresh data dir makes them on first use too
            with tempfile.TemporaryFile(dir=folder, prefix=".readyz-", suffix=".probe") as probe:
                probe.write(b"\0" * PROBE_BYTES)
                probe.flush()
        except OSError as error:
            logger.warning("readiness: %s is not writable: %s", folder, error)
            return f"{name}: {error.strerror or type(error).__name__}"
    return storage.problem()


def _folder_problem(settings: Settings) -> str | None:
    queue = settings.broker_dir / "queue"
    if not queue.is_dir():
        return f"broker folder {queue.name!r} is missing"
    try:
        # Writing is what enqueueing does; os.access would not notice a read-only mount.
        with tempfile.TemporaryFile(dir=queue, prefix=".readyz-", suffix=".probe"):
            pass
    except OSError as error:
        return f"broker folder is not writable: {error.strerror}"
    return None
