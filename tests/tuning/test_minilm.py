"""The README walkthrough's job on the real all-MiniLM-L6-v2: it must really learn, and PEFT must agree."""

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from tuning import Event, JobSpec, load_artifact, predict_logits, run
from tuning.data import read_classification_file
from tuning.models import BUNDLED_MODEL_ID, resolve_base_model

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


README_JOB = "examples/jobs/lora.json"


def readme_spec() -> JobSpec:
    """The job file the README's walkthrough posts, exactly: a missing or renamed file fails the test."""
    assert README_JOB in (EXAMPLES.parent / "README.md").read_text()
    return JobSpec.model_validate(json.loads((EXAMPLES.parent / README_JOB).read_text()))


@pytest.mark.slow
def test_lora_on_minilm_learns_the_examples_and_reloads_in_peft(tmp_path: Path) -> None:
    spec = readme_spec()
    assert spec.base_model == BUNDLED_MODEL_ID and spec.method.type == "lora"
    validation_path = EXAMPLES / "validation.jsonl"
    events: list[Event] = []
    started = time.perf_counter()
    result = run(
        spec,
        tmp_path / "out",
        training_path=EXAMPLES / "train.jsonl",
        validation_path=validation_path,
        on_event=events.append,
    )
    wall = time.perf_counter() - started
    metrics = result.metrics
    logger.warning(
        "MiniLM walkthrough job: %.0f s, validation accuracy %.1f%% -> %.1f%%",
        wall,
        100 * metrics["initial_val_accuracy"],
        100 * metrics["val_accuracy"],
    )
    assert metrics["val_accuracy"] >= metrics["initial_val_accuracy"] + 0.30
    assert metrics["val_loss"] < metrics["initial_val_loss"]
    eval_steps = [event.data["step"] for event in events if event.type == "eval"]
    assert eval_steps[0] == 0 and eval_steps[-1] == result.steps

    validation = read_classification_file(validation_path)
    texts = [example.text for example in validation]
    loaded = load_artifact(tmp_path / "out")
    ours = predict_logits(loaded, texts)

    base_path = resolve_base_model(spec.base_model, [])
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=len(loaded.labels))
    peft_model = PeftModel.from_pretrained(base, tmp_path / "out").eval()
    inputs = loaded.tokenizer(
        texts, padding=True, truncation=True, max_length=loaded.max_length, return_tensors="pt"
    )
    # all-MiniLM-L6-v2 declares mean pooling, so head.pooling "auto" chose it: the README's lines.
    assert loaded.manifest["pooling"] == "mean"
    with torch.no_grad():
        inner: Any = peft_model.base_model.model
        hidden = inner.bert(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        theirs = inner.classifier((hidden * mask).sum(1) / mask.sum(1))
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    predicted = [loaded.labels[index] for index in theirs.argmax(dim=-1).tolist()]
    accuracy = sum(p == e.label for p, e in zip(predicted, validation, strict=True)) / len(validation)
    assert accuracy == pytest.approx(metrics["val_accuracy"])
