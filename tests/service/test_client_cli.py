"""The `deltatune` client commands against real servers: `deltatune serve` (its API, a real Celery
worker, a tiny BERT) for a job from upload to download, and an in-process uvicorn for the rest.

The commands run through `service.cli.main` in this process, finding the server in DELTATUNE_URL
and the key in the file `serve` saved, as a user in the server's folder would.
"""

import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from rich.console import Console

from core.schema_version import upgrade_to_head
from core.settings import Settings
from service.app import create_app
from service.cli import main
from service.client.api import DeltatuneClient
from service.client.connection import KEY_FILE_NAME
from service.client.watch import WatchView, watch_job
from tests.integration.server import ServeProcess, free_port
from tests.service.conftest import key_headers
from tests.service.helpers import create_job, set_job
from tests.service.live_server import LiveServer
from tests.service.test_event_stream import add_event, end_job
from tests.worker.jobs import sentiment_lines
from tests.worker.processes import clean_environment


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Iterator[ServeProcess]:
    """`deltatune serve` in a folder of its own, its worker ready."""
    cwd = tmp_path_factory.mktemp("serve")
    env = clean_environment(
        DELTATUNE_DATA_DIR="data", DELTATUNE_MODEL_DIRS=json.dumps([str(tiny_bert_dir.parent)])
    )
    server = ServeProcess(env, cwd, cwd / "serve.log").start()
    try:
        server.wait_until_serving()
        server.wait_until_worker_ready()
        yield server
    finally:
        server.kill_leftovers()


@pytest.fixture
def in_served_folder(served: ServeProcess, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As a user in the folder `serve` runs in: the URL in DELTATUNE_URL, the key found in its file."""
    for name in list(os.environ):
        if name.startswith("DELTATUNE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(served.cwd)
    monkeypatch.setenv("DELTATUNE_URL", served.url)
    monkeypatch.setenv("DELTATUNE_DATA_DIR", "data")
    (served.cwd / "train.jsonl").write_text("\n".join(sentiment_lines(16, seed=1)) + "\n")
    (served.cwd / "validation.jsonl").write_text("\n".join(sentiment_lines(8, seed=2)) + "\n")
    return served.cwd


def test_a_job_from_upload_through_watch_to_a_checked_download(
    in_served_folder: Path, served: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = in_served_folder
    code, training, err = run(capsys, "files", "upload", "train.jsonl")
    assert code == 0 and training.startswith("file-") and "16 examples" in err
    spec = {
        "base_model": "tiny-bert",
        "method": {"type": "lora", "r": 4, "alpha": 8},
        "hyperparameters": {"logging_steps": 2},
        "metadata": {"t": "cli"},
    }
    (cwd / "spec.json").write_text(json.dumps(spec))
    code, job_id, err = run(
        capsys,
        *("jobs", "create", "--spec", "spec.json", "--training-file", training.strip()),
        # 80 steps: long enough for the poller below to see the job running, however fast the machine.
        *("--validation-file", "validation.jsonl", "--epochs", "20", "--batch-size", "4"),
        *("--learning-rate", "0.01", "--metadata", "run=watch"),
    )
    job_id = job_id.strip()
    assert code == 0 and job_id.startswith("ftjob-"), err
    assert "uploaded validation.jsonl" in err  # a local path is uploaded first

    # While `jobs watch` runs, another client polls the job: its counters are live, not 0 until the end.
    seen = poll_job_in_background(served.url, (cwd / "data" / KEY_FILE_NAME).read_text().strip(), job_id)
    code, _, watched = run(capsys, "jobs", "watch", job_id)
    snapshots = seen.stop()
    with capsys.disabled():
        print(f"\n--- what `deltatune jobs watch` printed ---\n{watched}")
    assert code == 0, watched
    assert f"watching job {job_id}" in watched and "step 80/80: train loss" in watched
    assert "step 80: validation loss" in watched and f"job {job_id} succeeded" in watched
    running = [job for job in snapshots if job["status"] == "running" and job["examples_seen"] > 0]
    assert running, snapshots
    assert any(job["estimated_finish"] is not None and job["trained_tokens"] > 0 for job in running)
    assert any(job["examples_seen"] < 320 for job in running)  # mid-training figures, not only the final 320

    code, got, _ = run(capsys, "jobs", "get", job_id, "--json")
    job = json.loads(got)
    assert (job["status"], job["examples_seen"], job["metadata"]) == (
        "succeeded",
        320,
        {"t": "cli", "run": "watch"},
    )
    assert job["estimated_finish"] is None  # no estimate once it is no longer running
    code, listed, _ = run(capsys, "jobs", "list")
    assert code == 0 and job_id in listed and "succeeded" in listed

    code, out, err = run(capsys, "jobs", "download", job_id)
    assert code == 0 and "every sha256 checked" in err
    for artifact in job["artifacts"]:
        content = (cwd / job_id / artifact["name"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == artifact["sha256"]
    code, _, err = run(capsys, "jobs", "download", job_id)
    assert code == 2 and "already exists; pass --force" in err
    assert run(capsys, "jobs", "download", job_id, "--force")[0] == 0
    code, _, _ = run(capsys, "jobs", "download", job_id, "--archive", "-o", "adapter.tar.gz")
    assert code == 0 and (cwd / "adapter.tar.gz").stat().st_size > 0

    # The server's copy changes under it: the download says so, and leaves nothing under the name.
    (stored,) = (cwd / "data" / "artifacts" / job_id).glob("attempt-*")
    (stored / "deltatune.json").write_text("{}")
    for archive in ((), ("--archive",)):
        code, _, err = run(capsys, "jobs", "download", job_id, *archive, "-o", f"tampered{len(archive)}")
        assert code == 1 and "sha256" in err, err
        assert not (cwd / f"tampered{len(archive)}").exists()


class JobPoller:
    def __init__(self, url: str, key: str, job_id: str) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(url, key, job_id), daemon=True)
        self._thread.start()

    def _poll(self, url: str, key: str, job_id: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            while not self._stop.wait(0.2):
                self.snapshots.append(client.get(f"/v1/jobs/{job_id}").json())

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.snapshots


def poll_job_in_background(url: str, key: str, job_id: str) -> JobPoller:
    return JobPoller(url, key, job_id)


def test_the_servers_errors_are_printed_and_the_exit_code_says_who_failed(
    in_served_folder: Path,
    served: ServeProcess,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (in_served_folder / "data.csv").write_text("text,label\nhello,positive\n")
    code, out, err = run(capsys, "files", "upload", "data.csv")
    assert (code, out) == (1, "") and "error (422): line 1: not valid JSON" in err and "[param: file]" in err

    code, _, err = run(capsys, "jobs", "get", "ftjob-nope")
    assert code == 1 and "error (404): no job with id 'ftjob-nope' [param: job_id]" in err
    code, _, err = run(capsys, "jobs", "create", "--base-model", "nope", "--training-file", "file-nope")
    assert code == 1 and "error (4" in err
    code, _, err = run(capsys, "jobs", "list", "--api-key", "dt-wrong")
    assert code == 1 and "invalid API key" in err  # the flag wins over the key file

    code, _, err = run(capsys, "jobs", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 3 and "cannot connect to" in err
    monkeypatch.setenv("DELTATUNE_DATA_DIR", "elsewhere")
    code, _, err = run(capsys, "models", "list")
    assert code == 2 and "no API key" in err and "DELTATUNE_API_KEY" in err
    monkeypatch.setenv("DELTATUNE_API_KEY", (in_served_folder / "data" / KEY_FILE_NAME).read_text().strip())
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "tiny-bert" in out  # the environment's key

    (in_served_folder / "broken.json").write_text("{not json")
    code, _, err = run(capsys, "jobs", "create", "--spec", "broken.json")
    assert code == 2 and "is not JSON" in err


# --- watch, against an in-process server whose rows the test writes ---------------------------------


@pytest.fixture
def live_app(tmp_path: Path, tiny_bert_dir: Path) -> FastAPI:
    settings = Settings(
        data_dir=tmp_path / "data",
        model_dirs=[tiny_bert_dir.parent],
        event_stream_poll_seconds=0.05,
        event_stream_keep_alive_seconds=0.2,
    )
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.database_url)
    return create_app(settings)


class DroppingTransport(httpx.HTTPTransport):
    """A real connection that breaks once: the first event stream is cut right after its first event."""

    def __init__(self) -> None:
        super().__init__()
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith("/events/stream"):
            return response
        self.last_event_ids.append(request.headers.get("Last-Event-ID"))
        if len(self.last_event_ids) > 1:
            return response
        upstream = response.stream

        class Cut(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                received = b""
                for chunk in upstream:  # type: ignore[union-attr]
                    received += chunk
                    end = received.find(b"\n\n")
                    if end >= 0:
                        yield received[: end + 2]
                        raise httpx.ReadError("connection reset by peer")

            def close(self) -> None:
                upstream.close()  # type: ignore[union-attr]

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut(), request=request)


def test_watch_reconnects_after_the_last_event_it_showed_and_ends_with_the_job(live_app: FastAPI) -> None:
    with TestClient(live_app) as client:
        headers = key_headers(live_app, "alice")
        job_id = create_job(client, headers)["id"]
    set_job(live_app, job_id, status="running")
    ids = [
        add_event(live_app, job_id, "metrics", step=step, total_steps=4, train_loss=1.0 / step)
        for step in (1, 2)
    ]
    transport = DroppingTransport()
    console = Console(file=io.StringIO())
    with (
        LiveServer(live_app) as live,
        DeltatuneClient(live.url, headers["Authorization"].split()[1], transport=transport) as api,
    ):
        # The job ends while the watch is away; it comes back after the event it last showed.
        finisher = threading.Timer(
            0.5,
            lambda: (
                add_event(live_app, job_id, "metrics", step=4, total_steps=4),
                end_job(live_app, job_id),
            ),
        )
        finisher.start()
        job = watch_job(api, job_id, console, sleep=lambda seconds: None)
        finisher.join()
    assert job["status"] == "succeeded"
    assert transport.last_event_ids[0] is None
    assert transport.last_event_ids == [None, str(ids[0])]  # after the one event it got before the cut
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert shown.count("metrics {'step': 2") == 1  # shown once: neither lost nor repeated


def test_watch_of_a_failed_job_exits_1_with_its_error(
    live_app: FastAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(live_app) as client:
        headers = key_headers(live_app, "alice")
        job_id = create_job(client, headers)["id"]
    set_job(
        live_app,
        job_id,
        error_code="invalid_data",
        error_message="line 3: label missing",
        error_param="training_file",
    )
    end_job(live_app, job_id, "failed")
    with LiveServer(live_app) as live:
        monkeypatch.setenv("DELTATUNE_URL", live.url)
        monkeypatch.setenv("DELTATUNE_API_KEY", headers["Authorization"].split()[1])
        code, _, err = run(capsys, "jobs", "watch", job_id)
    assert code == 1
    assert f"job {job_id} failed (invalid_data): line 3: label missing [param: training_file]" in err


def test_on_a_terminal_watch_draws_a_bar_with_step_loss_validation_and_time_left(live_app: FastAPI) -> None:
    with TestClient(live_app) as client:
        headers = key_headers(live_app, "alice")
        job_id = create_job(client, headers)["id"]
    set_job(live_app, job_id, status="running")
    add_event(live_app, job_id, "eval", step=0, val_accuracy=0.25)
    add_event(live_app, job_id, "metrics", step=3, total_steps=12, train_loss=0.5, elapsed_seconds=6.0)
    end_job(live_app, job_id, "cancelled")
    screen = Console(file=io.StringIO(), force_terminal=True, width=160)
    with (
        LiveServer(live_app) as live,
        DeltatuneClient(live.url, headers["Authorization"].split()[1]) as api,
    ):
        job = watch_job(api, job_id, screen)
    drawn = screen.file.getvalue()  # type: ignore[attr-defined]
    assert job["status"] == "cancelled"
    assert "step 3/12" in drawn and "loss 0.5000" in drawn and "val accuracy 0.25" in drawn
    assert "0:00:06 elapsed" in drawn and f"job {job_id} cancelled" in drawn

    view = WatchView(screen, job)
    view.show({"type": "metrics", "data": {"step": 3, "total_steps": 12, "elapsed_seconds": 6.0}})
    assert view.progress.tasks[0].fields["eta"] == "0:00:06 elapsed, 0:00:18 left"  # 9 steps at 2 s


def test_delete_removes_a_finished_job_and_says_why_it_will_not_remove_a_running_one(
    live_app: FastAPI, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(live_app) as client:
        headers = key_headers(live_app, "alice")
        finished, running = create_job(client, headers)["id"], create_job(client, headers)["id"]
    end_job(live_app, finished, "succeeded")
    set_job(live_app, running, status="running")
    with LiveServer(live_app) as live:
        monkeypatch.setenv("DELTATUNE_URL", live.url)
        monkeypatch.setenv("DELTATUNE_API_KEY", headers["Authorization"].split()[1])
        code, _, err = run(capsys, "jobs", "delete", finished)
        assert code == 0 and f"job {finished} deleted, with its artifact and checkpoints" in err
        code, _, err = run(capsys, "jobs", "delete", running)
        assert code == 1 and "error (409)" in err and "cancel it" in err
        code, _, err = run(capsys, "jobs", "get", finished)
        assert code == 1 and "error (404)" in err
