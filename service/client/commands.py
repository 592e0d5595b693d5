"""The client half of the `deltatune` command: `files`, `jobs` and `models` against a running server.

Each command prints what a script wants on stdout (an id, a table, JSON with `--json`) and what a
person wants on stderr (what happened, progress). The server's own error message (and the field it
names) is printed as it came. Exit codes: 0 done; 1 the server refused, or the watched job did not
succeed, or a download did not match its checksums; 2 a problem here (bad arguments, no key, a
target in the way); 3 no answer from the server.
"""

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.client.api import DeltatuneClient, RequestRefused, ServerUnreachable
from service.client.connection import NoApiKey, find_connection
from service.client.download import ChecksumMismatch, DownloadProblem, download_archive, download_files
from service.client.watch import SUCCEEDED, watch_job

EXIT_OK, EXIT_REFUSED, EXIT_LOCAL, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FILE_ID_PREFIX = "file-"

ClientCommand = Callable[[DeltatuneClient, argparse.Namespace, Console], int]
Subcommands = Any  # argparse's _SubParsersAction, private to argparse


class LocalProblem(Exception):
    """Something on this side: a spec file that does not parse, a path that is not a file."""


def add_client_commands(commands: Subcommands) -> None:
    """`files`, `jobs` and `models` on the `deltatune` parser; each leaf sets `client`."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--url", help="server URL (default: DELTATUNE_URL, else http://127.0.0.1:8000)")
    connection.add_argument(
        "--api-key",
        help="API key (default: DELTATUNE_API_KEY, else the key `deltatune serve` saved in "
        "<DELTATUNE_DATA_DIR>/api-key)",
    )
    _add_files(commands, connection)
    _add_jobs(commands, connection)
    models = commands.add_parser("models", help="client: base models the workers can load")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    listing = model_commands.add_parser("list", parents=[connection], help="list base models")
    listing.add_argument("--json", action="store_true", help="print the server's JSON")
    listing.set_defaults(client=_models_list)


def _add_files(commands: Subcommands, connection: argparse.ArgumentParser) -> None:
    files = commands.add_parser("files", help="client: upload training data")
    file_commands = files.add_subparsers(dest="files_command", required=True, metavar="FILES_COMMAND")
    upload = file_commands.add_parser(
        "upload", parents=[connection], help="upload a JSONL file; prints its id (checked line by line)"
    )
    upload.add_argument("path", type=Path)
    upload.add_argument("--purpose", default="fine-tune", help="(default: %(default)s)")
    upload.set_defaults(client=_files_upload)


def _add_jobs(commands: Subcommands, connection: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser("jobs", help="client: create, follow, cancel, download and delete jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")

    create = job_commands.add_parser(
        "create",
        parents=[connection],
        help="create a job from a spec file and/or flags; prints its id",
        description="Create a job. The flags override the spec file's fields; a --training-file or "
        "--validation-file that is a local path is uploaded first.",
    )
    create.add_argument("--spec", type=Path, help="a job spec JSON file, e.g. examples/jobs/lora.json")
    create.add_argument("--training-file", help="a file id, or a local JSONL file to upload")
    create.add_argument("--validation-file", help="a file id, or a local JSONL file to upload")
    create.add_argument("--base-model", help="a model id from `deltatune models list`")
    create.add_argument("--method", help="a method type (lora, bitfit, full, ...) with its default options")
    create.add_argument("--epochs", type=int)
    create.add_argument("--batch-size", type=int)
    create.add_argument("--learning-rate", type=float)
    create.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    create.add_argument("--dry-run", action="store_true", help="validate and estimate; nothing is queued")
    create.add_argument("--watch", action="store_true", help="then watch it as `jobs watch` does")
    create.set_defaults(client=_jobs_create)

    listing = job_commands.add_parser("list", parents=[connection], help="your jobs, newest first")
    listing.add_argument("--limit", type=int, default=20, help="(default: %(default)s, at most 100)")
    listing.add_argument("--json", action="store_true", help="print the server's JSON")
    listing.set_defaults(client=_jobs_list)

    get = job_commands.add_parser("get", parents=[connection], help="one job: status, progress, metrics")
    get.add_argument("job_id")
    get.add_argument("--json", action="store_true", help="print the server's JSON")
    get.set_defaults(client=_jobs_get)

    watch = job_commands.add_parser(
        "watch",
        parents=[connection],
        help="a live progress bar until the job ends; exits 0 only if it succeeded",
    )
    watch.add_argument("job_id")
    watch.set_defaults(client=_jobs_watch)

    cancel = job_commands.add_parser("cancel", parents=[connection], help="cancel a queued or running job")
    cancel.add_argument("job_id")
    cancel.set_defaults(client=_jobs_cancel)

    delete = job_commands.add_parser(
        "delete", parents=[connection], help="delete a finished job with its artifact and checkpoints"
    )
    delete.add_argument("job_id")
    delete.set_defaults(client=_jobs_delete)

    download = job_commands.add_parser(
        "download", parents=[connection], help="download a succeeded job's artifact, checking each sha256"
    )
    download.add_argument("job_id")
    download.add_argument(
        "--output", "-o", type=Path, help="folder (default: ./<job id>) or, with --archive, file"
    )
    download.add_argument("--archive", action="store_true", help="one .tar.gz (default: ./<job id>.tar.gz)")
    download.add_argument("--force", action="store_true", help="replace an existing output")
    download.set_defaults(client=_jobs_download)


def run_client(args: argparse.Namespace) -> int:
    """Run the client command the parser chose, turning every failure into a message and a code."""
    command: ClientCommand = args.client
    # soft_wrap: a long line is left whole, for a terminal to wrap and a log to keep on one line.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        connection = find_connection(url=args.url, api_key=args.api_key)
        with DeltatuneClient(connection.url, connection.api_key) as client:
            return command(client, args, console)
    except RequestRefused as error:
        param = f" [param: {error.param}]" if error.param else ""
        console.print(f"[red]error[/] ({error.status}): {escape(error.message)}{escape(param)}")
        return EXIT_REFUSED
    except ChecksumMismatch as error:
        console.print(f"[red]error[/]: {escape(str(error))}")
        return EXIT_REFUSED
    except (NoApiKey, LocalProblem, DownloadProblem) as error:
        console.print(f"[red]error[/]: {escape(str(error))}")
        return EXIT_LOCAL
    except ServerUnreachable as error:
        console.print(f"[red]error[/]: {escape(str(error))}. Is deltatune running there? (`deltatune serve`)")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        console.print("interrupted")
        return EXIT_INTERRUPTED


# --- files and models ------------------------------------------------------------------------------


def _files_upload(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    file = _upload(client, args.path, console, purpose=args.purpose)
    print(file["id"])
    return EXIT_OK


def _upload(client: DeltatuneClient, path: Path, console: Console, *, purpose: str = "fine-tune") -> Any:
    if not path.is_file():
        raise LocalProblem(f"{path} is not a file")
    file = client.upload_file(path, purpose=purpose)
    console.print(
        f"uploaded {escape(path.name)} as {file['id']}: {file.get('examples')} examples, "
        f"format {file.get('format')}"
    )
    return file


def _models_list(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    models = client.list_models()
    if args.json:
        return _print_json({"data": models})
    table = Table("MODEL", "SOURCE", "ARCHITECTURE", "PARAMETERS", "TASKS", box=None)
    for model in models:
        parameters = f"{model['parameters']:,}" if model.get("parameters") else "-"
        tasks = ", ".join(model.get("tasks") or [])
        table.add_row(model["id"], model["source"], model.get("architecture") or "-", parameters, tasks)
    _stdout().print(table)
    return EXIT_OK


# --- jobs ------------------------------------------------------------------------------------------


def _jobs_create(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    spec = _spec_from(args)
    for field in ("training_file", "validation_file"):
        value = getattr(args, field)
        if value is not None:
            spec[field] = (
                value if value.startswith(FILE_ID_PREFIX) else _upload(client, Path(value), console)["id"]
            )
    if args.dry_run:
        spec["dry_run"] = True
        return _print_json(client.create_job(spec))
    job = client.create_job(spec)
    console.print(
        f"created job {job['id']} ({job['status']}): {job['method']['type']} on {job['base_model']}"
    )
    print(job["id"], flush=True)
    if args.watch:
        return _watch(client, job["id"], console)
    return EXIT_OK


def _spec_from(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if args.spec is not None:
        try:
            spec = json.loads(args.spec.read_text(encoding="utf-8"))
        except OSError as error:
            raise LocalProblem(f"cannot read the spec file {args.spec}: {error.strerror}") from error
        except ValueError as error:
            raise LocalProblem(f"the spec file {args.spec} is not JSON: {error}") from error
        if not isinstance(spec, dict):
            raise LocalProblem(f"the spec file {args.spec} must hold a JSON object")
    if args.base_model is not None:
        spec["base_model"] = args.base_model
    if args.method is not None:
        spec["method"] = {"type": args.method}
    hyperparameters = {
        name: value
        for name, value in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("learning_rate", args.learning_rate),
        )
        if value is not None
    }
    if hyperparameters:
        spec["hyperparameters"] = {**(spec.get("hyperparameters") or {}), **hyperparameters}
    for pair in args.metadata:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LocalProblem(f"--metadata takes KEY=VALUE, not {pair!r}")
        spec["metadata"] = {**(spec.get("metadata") or {}), key: value}
    return spec


def _jobs_list(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    jobs = client.list_jobs(limit=args.limit)
    if args.json:
        return _print_json({"data": jobs})
    table = Table("JOB", "STATUS", "METHOD", "BASE MODEL", "PROGRESS", "CREATED", box=None)
    for job in jobs:
        table.add_row(
            job["id"],
            job["status"],
            job["method"]["type"],
            job["base_model"],
            f"{job['progress']:.0%}",
            _when(job["created_at"]),
        )
    _stdout().print(table)
    return EXIT_OK


def _jobs_get(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    job = client.get_job(args.job_id)
    if args.json:
        return _print_json(job)
    table = Table(show_header=False, box=None)
    rows = [
        ("job", job["id"]),
        ("status", job["status"]),
        ("method", job["method"]["type"]),
        ("base model", job["base_model"]),
        ("progress", f"{job['progress']:.0%}"),
        ("examples seen", f"{job['examples_seen']:,}"),
        ("trained tokens", f"{job['trained_tokens']:,}"),
        ("created", _when(job["created_at"])),
        ("started", _when(job["started_at"])),
        ("finished", _when(job["finished_at"])),
    ]
    if job.get("estimated_finish"):
        rows.append(("estimated finish", _when(job["estimated_finish"])))
    rows += [(name, _number(value)) for name, value in sorted((job.get("metrics") or {}).items())]
    if job.get("error"):
        rows.append(("error", f"{job['error']['code']}: {job['error']['message']}"))
    rows += [("artifact", f"{a['name']}  {a['bytes']:,} bytes") for a in job.get("artifacts") or []]
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    _stdout().print(table)
    return EXIT_OK


def _jobs_watch(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    return _watch(client, args.job_id, console)


def _watch(client: DeltatuneClient, job_id: str, console: Console) -> int:
    try:
        job = watch_job(client, job_id, console)
    except KeyboardInterrupt:
        console.print(f"stopped watching; job {job_id} goes on (`deltatune jobs cancel {job_id}` stops it)")
        return EXIT_INTERRUPTED
    return EXIT_OK if job["status"] == SUCCEEDED else EXIT_REFUSED


def _jobs_cancel(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    job = client.cancel_job(args.job_id)
    if job["status"] == "cancelled":
        console.print(f"job {job['id']} cancelled")
    else:
        console.print(f"job {job['id']} is {job['status']}: its worker stops it within a few steps")
    return EXIT_OK


def _jobs_delete(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    deleted = client.delete_job(args.job_id)
    console.print(f"job {deleted['id']} deleted, with its artifact and checkpoints")
    return EXIT_OK


def _jobs_download(client: DeltatuneClient, args: argparse.Namespace, console: Console) -> int:
    if args.archive:
        target = args.output or Path(f"{args.job_id}.tar.gz")
        artifacts = download_archive(client, args.job_id, target, force=args.force, console=console)
    else:
        target = args.output or Path(args.job_id)
        artifacts = download_files(client, args.job_id, target, force=args.force, console=console)
    total = sum(artifact["bytes"] for artifact in artifacts)
    console.print(f"downloaded {len(artifacts)} files ({total:,} bytes), every sha256 checked, to {target}")
    print(target)
    return EXIT_OK


# --- output ----------------------------------------------------------------------------------------


def _stdout() -> Console:
    """Tables on stdout: fitted to a terminal, but never cut short in a pipe or a file."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)


def _print_json(body: Any) -> int:
    print(json.dumps(body, indent=2))
    return EXIT_OK


def _when(seconds: int | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
