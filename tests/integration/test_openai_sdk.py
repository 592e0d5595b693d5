"""The official `openai` SDK, unmodified, against deltatune: a real HTTP server (uvicorn) over the
distributed stack (PostgreSQL, Redis, a real Celery worker process) and a tiny GPT-2.

One path, as a user of OpenAI's fine-tuning API walks it: upload chat and prompt/completion files,
create a job, list its events while it trains, pause it, resume it, cancel another job, retrieve the
finished one (its strict SDK type, result CSV and checkpoints), and fine-tune its model further.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import uvicorn
from openai.types.fine_tuning import FineTuningJob

from service.app import create_app
from service.auth import create_api_key
from tests.integration.conftest import Stack
from tests.integration.server import free_port

pytestmark = pytest.mark.integration

WORDS = ["red", "green", "blue", "cyan", "black", "white", "amber", "olive"]


def chat_lines(count: int) -> bytes:
    lines = [
        {
            "messages": [
                {"role": "user", "content": WORDS[i % len(WORDS)]},
                {"role": "assistant", "content": WORDS[i % len(WORDS)]},
            ]
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def prompt_lines(count: int) -> bytes:
    lines = [
        {"prompt": f"colour {WORDS[i % 8]}:", "completion": f" {WORDS[(i + 1) % 8]}"} for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture(scope="module")
def sdk(stack: Stack, tiny_gpt2_dir: Path) -> Iterator[openai.OpenAI]:
    """An SDK client on a real server of this stack's settings, as `deltatune` serves the API."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(stack.settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API server did not start"
    with stack.sessions() as session:
        key = create_api_key(session, owner_name="sdk-user")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)


def wait_until(check: Callable[[], object], *, timeout: float = 60.0, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(sdk: openai.OpenAI, job_id: str) -> str:
    return sdk.fine_tuning.jobs.retrieve(job_id).status


def test_the_whole_path_through_the_openai_sdk(sdk: openai.OpenAI) -> None:
    jobs = sdk.fine_tuning.jobs
    training = sdk.files.create(file=("chat.jsonl", chat_lines(24)), purpose="fine-tune")
    validation = sdk.files.create(file=("valid.jsonl", chat_lines(8)), purpose="fine-tune")
    assert sdk.files.retrieve(training.id).status == "processed"
    assert training.id in [f.id for f in sdk.files.list()]

    job = jobs.create(
        model="tiny-gpt2",
        training_file=training.id,
        validation_file=validation.id,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": "auto"}
            },
        },
        suffix="colours",
        seed=3,
        # deltatune's own hyperparameters beside OpenAI's, as the SDK sends extra fields.
        extra_body={"hyperparameters": {"max_seq_length": 64, "logging_steps": 2}},
    )
    assert (job.object, job.model, job.seed, job.hyperparameters.n_epochs) == (
        "fine_tuning.job",
        "tiny-gpt2",
        3,
        2,
    )
    assert job.status in ("queued", "running")

    # Events while it trains: metrics arrive, newest first.
    def metrics() -> list[object]:
        current = jobs.retrieve(job.id)
        assert current.status in ("queued", "running"), current.error
        return [e for e in jobs.list_events(job.id, limit=50).data if e.type == "metrics"]

    wait_until(metrics, what="a metrics event")
    assert status_of(sdk, job.id) == "running"

    paused = jobs.pause(job.id)
    assert paused.status in ("running", "paused")
    wait_until(lambda: status_of(sdk, job.id) == "paused", what="the job to pause")
    messages = [e.message for e in jobs.list_events(job.id, limit=100)]  # auto-pagination over pages
    assert any(m.startswith("paused at step ") for m in messages)
    # Another job, which the worker the pause set free takes: cancelled, and then it cannot pause.
    other = jobs.create(model="tiny-gpt2", training_file=training.id)
    assert jobs.cancel(other.id).status in ("cancelled", "running")  # running: it stops within a few steps
    wait_until(lambda: status_of(sdk, other.id) == "cancelled", what="the other job to cancel")
    with pytest.raises(openai.ConflictError) as finished:
        jobs.pause(other.id)
    assert "already cancelled" in finished.value.message

    resumed = jobs.resume(job.id)
    assert resumed.status == "queued"

    wait_until(lambda: status_of(sdk, job.id) == "succeeded", timeout=120, what="the job to succeed")
    done = jobs.retrieve(job.id)
    FineTuningJob.model_validate(done.to_dict())  # the SDK's own type, validated strictly
    assert done.fine_tuned_model is not None and done.fine_tuned_model.startswith(
        "ft:tiny-gpt2:sdk-user:colours:"
    )
    assert done.trained_tokens and done.finished_at and done.error is None
    events = list(jobs.list_events(job.id, limit=20))
    assert any(e.message.startswith("resumed from step") for e in events)

    checkpoints = jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == sorted((c.step_number for c in checkpoints), reverse=True)
    assert len(checkpoints) == 2 and all(c.fine_tuning_job_id == job.id for c in checkpoints)
    assert checkpoints[0].metrics.valid_loss is not None

    (result_id,) = done.result_files
    csv = sdk.files.content(result_id).text
    assert csv.splitlines()[0].startswith("step,epoch,train_loss,learning_rate,valid_loss")
    assert len(csv.splitlines()) > 4

    listed = [j.id for j in jobs.list(limit=1)]  # auto-pagination, one job a page
    assert {job.id, other.id} <= set(listed)

    model = sdk.models.retrieve(done.fine_tuned_model)
    assert (model.id, model.object, model.owned_by) == (done.fine_tuned_model, "model", done.organization_id)
    assert model.created > 0

    # Its model is a later job's model: prompt/completion data, trained as it is.
    prompts = sdk.files.create(file=("prompts.jsonl", prompt_lines(16)), purpose="fine-tune")
    later = jobs.create(
        model=done.fine_tuned_model, training_file=prompts.id, hyperparameters={"n_epochs": 1}
    )
    assert later.model == job.id
    wait_until(lambda: status_of(sdk, later.id) in ("succeeded", "failed"), timeout=60, what="the later job")
    assert jobs.retrieve(later.id).status == "succeeded", jobs.retrieve(later.id).error


def test_errors_answer_in_openai_shape(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.fine_tuning.jobs.retrieve("ftjob-" + "0" * 24)
    assert missing.value.body["code"] == "job_not_found"  # type: ignore[index]
    training = sdk.files.create(file=("chat.jsonl", chat_lines(4)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.fine_tuning.jobs.create(
            model="tiny-gpt2", training_file=training.id, hyperparameters={"n_epochs": 0}
        )
    assert bad.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=str(sdk.base_url), api_key="wrong", max_retries=0).fine_tuning.jobs.list()
