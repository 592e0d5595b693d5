"""The FastAPI application: `create_app(settings)` builds one app with its own database and broker.

Each app owns its engine, sessionmaker and Celery app (on `app.state`), built from the settings it
is given, so tests and embedded servers never share a database through a module-level cache.
"""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from core.db import make_engine
from core.dispatch import make_celery, prepare_broker
from core.schema_version import assert_at_head, upgrade_to_head
from core.settings import Settings, get_settings
from core.storage import open_storage
from service.body_limit import RequestBodyLimit
from service.errors import install_error_handlers
from service.key_cache import KeyCache
from service.routes import (
    checkpoints,
    event_stream,
    files,
    fine_tuning,
    health,
    jobs,
    methods,
    models,
    page,
    pauses,
    transferability,
    webhooks,
)
from service.stream_slots import StreamSlots

logger = logging.getLogger(__name__)

DESCRIPTION = """Fine-tune pretrained models over REST and download the trained delta.

Authenticate with `Authorization: Bearer <key>` (create keys with `deltatune keys create`).
Every error answers `{"error": {"message", "type", "param", "code"}}`."""


def _version() -> str:
    try:
        return version("deltatune")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def prepare_schema(settings: Settings) -> None:
    """Embedded: migrate our own database. Distributed: refuse a schema behind head, saying so."""
    if settings.auto_migrate:
        upgrade_to_head(settings.database_url)
    else:
        assert_at_head(settings.database_url)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url, connections=settings.api_database_connections)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(prepare_schema, settings)
        # The API is about to send: the filesystem broker's folders exist from its start (and /readyz
        # reports them missing if they go).
        prepare_broker(app.state.celery)
        logger.info(
            "deltatune API ready (database %s, broker %s)", engine.url.get_backend_name(), settings.broker_url
        )
        yield
        engine.dispose()

    # FastAPI's own /docs and /redoc load their scripts from a CDN; service/routes/page.py serves /docs
    # from vendored files instead, and there is no /redoc.
    app = FastAPI(
        title="deltatune",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.storage = open_storage(settings)
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
    app.state.api_keys = KeyCache(ttl_seconds=settings.api_key_cache_seconds)
    app.state.celery = make_celery(settings)
    app.state.event_streams = StreamSlots(settings.max_event_streams_per_owner)
    install_error_handlers(app)
    app.add_middleware(RequestBodyLimit)
    for module in (
        health,
        files,
        jobs,
        event_stream,
        pauses,
        checkpoints,
        methods,
        models,
        transferability,
        fine_tuning,
        webhooks,
        page,
    ):
        app.include_router(module.router)
    app.mount(page.STATIC_URL, page.static_files(), name="static")
    return app


def served_app(settings: Settings | None = None) -> FastAPI:
    """The app a server process runs (`deltatune api`, `serve`): create_app's, with every object the
    process holds by then (its imports' ~150,000) set aside from the garbage collector.

    A full collection walks every tracked object: each took 70 to 140 ms on a loaded 2-core machine, a
    stall that every request in flight waited out (benchmarks/api_load.py's p99). Those objects live
    as long as the process anyway; frozen, no collection walks them again.
    """
    app = create_app(settings)
    gc.freeze()
    return app
