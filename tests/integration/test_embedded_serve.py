"""The embedded default for real: `deltatune serve` runs a job over HTTP and leaves nothing behind."""

import json
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.api_client import create_job, download_artifact, events, finished, upload, wait_for_job
from tests.integration.server import ServeProcess, alive
from tests.worker.jobs import sentiment_lines
from tests.worker.processes import clean_environment


@pytest.fixture()
def home(tmp_path: Path, tiny_bert_dir: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory and an environment naming only the data dir (relative) and the tiny model."""
    models = json.dumps([str(tiny_bert_dir.parent)])
    env = clean_environment(DELTATUNE_DATA_DIR="data", DELTATUNE_MODEL_DIRS=models)
    yield tmp_path, env


def stop_and_check_nothing_is_left(server: ServeProcess) -> None:
    descendants = set(server.note_children())
    assert descendants, "serve started no worker process"
    assert server.stop() == 0, server.log()[-4000:]
    assert [pid for pid in descendants if alive(pid)] == [], "processes outlived deltatune serve"


def test_serve_runs_a_job_end_to_end_and_stops_cleanly(
    home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    cwd, env = home
    server = ServeProcess(env, cwd, tmp_path / "serve.log").start()
    try:
        server.wait_until_serving()
        key_file = cwd / "data" / "api-key"
        key = key_file.read_text().strip()
        assert server.printed_keys() == [key]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert httpx.get(f"{server.url}/v1/jobs").status_code == 401  # auth is on, even on loopback

        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            training = upload(client, sentiment_lines(32, seed=1), filename="train.jsonl")
            validation = upload(client, sentiment_lines(16, seed=2), filename="validation.jsonl")
            job = create_job(
                client,
                {
                    "base_model": "tiny-bert",
                    "training_file": training,
                    "validation_file": validation,
                    "method": {"type": "lora", "r": 4, "alpha": 8},
                    "hyperparameters": {
                        "epochs": 2,
                        "batch_size": 8,
                        "learning_rate": 1e-2,
                        "logging_steps": 2,
                    },
                },
            )
            job = wait_for_job(client, job["id"], finished, timeout=180, what="finished", log=server.log)
            assert job["status"] == "succeeded", job["error"]
            assert any(event["type"] == "metrics" for event in events(client, job["id"]))
            listing = download_artifact(client, job["id"], tmp_path / "adapter")
        assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size > 0
        assert len(listing["data"]) >= 3
        # Everything lives under the data dir the worker was handed as an absolute path.
        assert (cwd / "data" / "deltatune.db").is_file()
        assert (cwd / "data" / "artifacts" / job["id"] / "attempt-1" / "adapter_config.json").is_file()
        assert not (cwd / "control").exists()

        stop_and_check_nothing_is_left(server)
    finally:
        server.kill_leftovers()

    # A second start keeps the database and prints the same key.
    again = ServeProcess(env, cwd, tmp_path / "serve-again.log").start()
    try:
        again.wait_until_serving()
        assert again.printed_keys() == [key]
        response = httpx.get(f"{again.url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["status"] == "succeeded"
        stop_and_check_nothing_is_left(again)
    finally:
        again.kill_leftovers()


def test_ctrl_c_stops_serve_and_its_worker(home: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    cwd, env = home
    server = ServeProcess(env, cwd, tmp_path / "serve.log").start()
    try:
        server.wait_until_serving()
        server.wait_until_worker_ready()
        assert server.process is not None
        descendants = set(server.note_children())
        # What a terminal's Ctrl-C sends to the foreground process (the worker has its own session).
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=60) == 0, server.log()[-4000:]
        assert [pid for pid in descendants if alive(pid)] == []
    finally:
        server.kill_leftovers()
