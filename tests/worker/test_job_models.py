"""A finished job's model made into a plain base model on the worker: same outputs, chains of jobs."""

from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import tuning
from core.settings import Settings
from core.storage import open_storage
from core.storage.keys import artifact_prefix
from tests.worker.jobs import add_job, job_row, sentiment_lines
from worker.job_models import job_models_dir, materialize_job_model
from worker.job_runner import run_job

TEXTS = [line.split('"text": "')[1].split('"')[0] for line in sentiment_lines(12, seed=9)]


def succeeded_job(sessions: sessionmaker[Session], settings: Settings, **spec_changes: object) -> str:
    job_id = add_job(sessions, settings, spec_changes=dict(spec_changes))
    status = run_job(job_id, settings=settings, sessions=sessions, worker="w1")
    assert status == "succeeded", job_row(sessions, job_id).error_message
    return job_id


def plain_logits(model_dir: Path, texts: list[str]) -> torch.Tensor:
    """The exported folder as anyone would load it: transformers alone, no deltatune."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**batch).logits


def artifact_logits(settings: Settings, job_id: str, texts: list[str]) -> torch.Tensor:
    model_dirs = [job_models_dir(settings), *settings.model_dirs]
    loaded = tuning.load_artifact(
        settings.data_dir / artifact_prefix(job_id, 1), model_dirs, device=torch.device("cpu")
    )
    return tuning.predict_logits(loaded, texts)


def test_a_lora_jobs_exported_model_reproduces_its_logits(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    source = succeeded_job(sessions, settings)

    folder = materialize_job_model(sessions, settings, open_storage(settings), source)

    assert folder == job_models_dir(settings) / source
    expected = artifact_logits(settings, source, TEXTS)
    exported = plain_logits(folder, TEXTS)
    assert torch.allclose(exported, expected, atol=1e-5), (exported - expected).abs().max()
    # The LoRA update is folded into the weights: the folder holds a plain BERT classifier.
    state = AutoModelForSequenceClassification.from_pretrained(folder).state_dict()
    assert not any("lora" in name for name in state)
    # Done once: a second call finds the folder and writes nothing.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    materialize_job_model(sessions, settings, open_storage(settings), source)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in job_models_dir(settings).iterdir()) == [source]


def test_a_chain_of_two_jobs_trains_and_exports(sessions: sessionmaker[Session], settings: Settings) -> None:
    first = succeeded_job(sessions, settings)
    # The second job trains on the first's model, found by its job id.
    second = succeeded_job(sessions, settings, base_model=first, method={"type": "full"})
    assert (
        job_row(sessions, second).metrics["initial_val_accuracy"]
        == job_row(sessions, first).metrics["val_accuracy"]
    )
    third = succeeded_job(sessions, settings, base_model=second, method={"type": "bitfit"})

    assert sorted(p.name for p in job_models_dir(settings).iterdir()) == sorted([first, second])
    expected = artifact_logits(settings, second, TEXTS)
    assert torch.allclose(plain_logits(job_models_dir(settings) / second, TEXTS), expected, atol=1e-5)
    assert job_row(sessions, third).status == "succeeded"


def test_a_job_on_an_unfinished_job_fails_naming_base_model(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    source = add_job(sessions, settings)  # queued, never run
    job_id = add_job(sessions, settings, spec_changes={"base_model": source})

    assert run_job(job_id, settings=settings, sessions=sessions, worker="w1") == "failed"

    job = job_row(sessions, job_id)
    assert (job.error_code, job.error_param) == ("invalid_base_model", "base_model")
    assert source in (job.error_message or "")
