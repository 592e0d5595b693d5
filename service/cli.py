"""The `deltatune` command: the embedded default (`serve`), the distributed processes, keys and migrations,
and the client commands (`files`, `jobs`, `models`, in service/client/) that talk to a running server.

This and service/client/ are the only places that print for the user; everything else logs.
"""

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from core.db import make_engine, sessions_for
from core.schema_version import SchemaNotAtHead, assert_at_head, upgrade_to_head
from core.settings import Settings, get_settings
from core.worker_process import DEFAULT_QUEUES, start_worker, stop_worker, worker_command
from service.auth import create_api_key, list_api_keys, owner_for_key, revoke_api_key
from service.client.commands import add_client_commands, run_client
from service.client.connection import KEY_FILE_NAME

logger = logging.getLogger("deltatune")

LOCAL_OWNER = "local"

SERVE_HELP = """\
Start deltatune on its embedded default: a SQLite database, uploads and artifacts under
DELTATUNE_DATA_DIR (default .deltatune), the API on 127.0.0.1:8000 and a real Celery worker beside
it over kombu's filesystem broker. No PostgreSQL, Redis or Docker needed.

The database is migrated on start. Auth stays on even on loopback: on first start an owner `local`
and an API key are created, the key is saved to <data_dir>/api-key (mode 0600) and printed; later
starts print the same key. Keeping auth on means the embedded default runs the very code path the
distributed service runs, and binding to another address (--host 0.0.0.0) never exposes an open API.
"""


class _CommandError(Exception):
    """A reason to refuse, shown to the user without a traceback."""


class _Stop(Exception):
    """Raised from the SIGTERM handler so `serve` unwinds and stops its worker (see _stop_on_sigterm)."""


# --- the parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltatune", description="Self-hosted REST fine-tuning service.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="embedded default: migrate, API and a worker in one command",
        description=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_listen_options(serve)
    serve.set_defaults(run=_serve)

    api = commands.add_parser("api", help="the API server only (refuses a schema behind head)")
    _add_listen_options(api)
    api.add_argument(
        "--processes",
        type=int,
        default=None,
        help="server processes (default: DELTATUNE_API_PROCESSES, 1; 0: one per CPU core)",
    )
    api.set_defaults(run=_api)

    worker = commands.add_parser("worker", help="a Celery worker (refuses a schema behind head)")
    worker.add_argument("--queues", default=DEFAULT_QUEUES, help="comma-separated (default: %(default)s)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default: %(default)s)")
    worker.add_argument("--hostname", default=None, help="Celery node name (default: celery@<host>)")
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to head (alembic)")
    migrate.set_defaults(run=_migrate)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    create = key_commands.add_parser("create", help="create a key for an owner and print it (shown once)")
    create.add_argument("--owner", required=True, help="owner name; created if new")
    create.set_defaults(run=_keys_create)
    key_commands.add_parser("list", help="list keys (never their secret)").set_defaults(run=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_keys_revoke)

    add_client_commands(commands)
    return parser


def _add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to bind (default: DELTATUNE_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: DELTATUNE_PORT, 8000)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "client"):
        # A client needs no server settings, and its output is its own (no INFO log of each request).
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return run_client(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        return run(args, get_settings())
    except _CommandError as error:
        print(f"deltatune {args.command}: {error}", file=sys.stderr)
        return 2


# --- the subcommands -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = _listening(settings, args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_schema(settings, migrate=True)
    key, key_file = _local_key(settings)
    # The worker inherits this environment, with data_dir made absolute so both processes agree on it.
    worker_env = dict(os.environ) | {"DELTATUNE_DATA_DIR": str(settings.data_dir.resolve())}
    worker = start_worker(worker_env, queues=DEFAULT_QUEUES, concurrency=1)
    stopping = threading.Event()
    _warn_if_worker_dies(worker.wait, stopping)
    print(f"deltatune is starting on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    print(f"API key: {key}", flush=True)
    print(f"  saved in {key_file.resolve()}; send it as `Authorization: Bearer <key>`", flush=True)
    try:
        with _stop_on_sigterm():
            _run_uvicorn(settings)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        stopping.set()
        stop_worker(worker)
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    settings = _listening(settings, args)
    # Checked before the schema: a refused command leaves nothing behind (no SQLite file created).
    processes = args.processes if args.processes is not None else settings.api_processes
    if processes < 0:
        raise _CommandError(f"--processes must be 0 (one per CPU core) or more, not {processes}")
    _prepare_schema(settings, migrate=settings.auto_migrate)
    # SIGTERM (a container stop) or Ctrl-C after uvicorn's graceful shutdown is a clean exit, not a kill.
    with contextlib.suppress(_Stop, KeyboardInterrupt), _stop_on_sigterm():
        _run_uvicorn(settings, processes=processes or os.cpu_count() or 1)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_schema(settings, migrate=settings.auto_migrate)
    command = worker_command(queues=args.queues, concurrency=args.concurrency, hostname=args.hostname)
    # This process becomes the Celery worker (same pid, so a container's SIGTERM reaches Celery itself);
    # started by module name, the CLI never imports the worker's packages.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_schema(settings, migrate=True)
    print("database schema is at head")
    return 0


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    with sessions_for(settings) as sessions, sessions() as session:
        key = create_api_key(session, owner_name=args.owner)
    print(key)
    print(f"(the key for owner {args.owner!r}; it is shown only now)", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with sessions_for(settings) as sessions, sessions() as session:
        keys = list_api_keys(session)
    print(f"{'ID':<32} {'OWNER':<20} {'PREFIX':<12} {'CREATED':<20} REVOKED")
    for key in keys:
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "-"
        created = key.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{key.id:<32} {key.owner_name:<20} {key.prefix:<12} {created:<20} {revoked}")
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with sessions_for(settings) as sessions, sessions() as session:
        if not revoke_api_key(session, key_id=args.key_id):
            raise _CommandError(f"no active key with id {args.key_id}")
    print(f"revoked {args.key_id}")
    return 0


# --- helpers ---------------------------------------------------------------------------------------


def _listening(settings: Settings, args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in ("host", "port") if getattr(args, name) is not None}
    return settings.model_copy(update=overrides)


def _prepare_schema(settings: Settings, *, migrate: bool) -> None:
    """Migrate to head, or (distributed) refuse to start on a schema behind head."""
    _make_sqlite_folder(settings)
    try:
        if migrate:
            upgrade_to_head(settings.database_url)
        else:
            assert_at_head(settings.database_url)
    except SchemaNotAtHead as error:
        raise _CommandError(str(error)) from error
    except OperationalError as error:
        where = make_engine(settings.database_url).url.render_as_string(hide_password=True)
        raise _CommandError(f"cannot reach the database at {where}: {error.orig}") from error


def _make_sqlite_folder(settings: Settings) -> None:
    """SQLite creates its file but not the folders above it ("unable to open database file"): the
    embedded default's data dir is made on first use, by whichever command comes first."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def _local_key(settings: Settings) -> tuple[str, Path]:
    """The embedded default's key: the saved one while the database knows it, else a new one, saved."""
    key_file = settings.data_dir / KEY_FILE_NAME
    with sessions_for(settings) as sessions, sessions() as session:
        if key_file.is_file():
            key = key_file.read_text(encoding="utf-8").strip()
            if owner_for_key(session, key) is not None:
                return key, key_file
            logger.warning("the key saved in %s is unknown to this database; creating a new one", key_file)
        key = create_api_key(session, owner_name=LOCAL_OWNER)
    _write_private(key_file, key + "\n")
    return key, key_file


def _write_private(path: Path, text: str) -> None:
    # Created 0600 from the start: the key is never readable by others, not even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an older file may have had wider permissions


def _run_uvicorn(settings: Settings, *, processes: int = 1) -> None:
    import uvicorn

    from service.app import served_app

    if processes == 1:
        uvicorn.run(served_app(settings), host=settings.host, port=settings.port, log_level="info")
        return
    # Several processes share the listening socket; each builds its own app (engine, pool, Celery app)
    # from the environment, which is where these settings came from too (only host and port, which
    # uvicorn's parent binds, may have come from flags).
    uvicorn.run(
        "service.app:served_app",
        factory=True,
        workers=processes,
        host=settings.host,
        port=settings.port,
        log_level="info",
    )


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception: uvicorn re-raises the signal it caught once it has shut down,
    and the default action would end this process before it stops the worker."""
    import signal

    def handle(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _warn_if_worker_dies(wait: Callable[[], int], stopping: threading.Event) -> None:
    def watch() -> None:
        code = wait()
        if not stopping.is_set():
            logger.warning("the Celery worker exited (code %s); jobs wait until it is back", code)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
