"""`"auto"` hyperparameters (tuning.auto): the rules, and that a job, its manifest, its events and its dry
run all agree on what auto chose, while numbers given stay as given."""

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import run
from tuning.auto import HEAD_LEARNING_RATE, auto_epochs, resolve
from tuning.estimate import Worker, estimate_job
from tuning.events import Event
from tuning.fit import _optimizer_groups, prepare
from tuning.spec import HeadSpec, JobSpec
from tuning.validation import validate_files


def spec_with(method: dict[str, Any], **hyperparameters: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-t",
            "method": method,
            "hyperparameters": hyperparameters,
        }
    )


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [(945, 3), (96, 10), (10, 10), (2_400, 1), (100_000, 1), (1_600, 2)],
)
def test_epochs_aim_at_about_150_steps_within_1_to_10(examples: int, epochs: int) -> None:
    assert auto_epochs(examples, math.ceil(examples / 16))[0] == epochs


def test_the_rate_is_the_papers_at_batch_16_and_grows_with_the_square_root_of_the_batch() -> None:
    lora = {"type": "lora", "target_modules": ["query", "value"]}
    at_16 = resolve(spec_with(lora), examples=945, steps_per_epoch=60)
    at_64 = resolve(spec_with(lora, batch_size=64), examples=945, steps_per_epoch=15)
    assert at_16.hyperparameters.learning_rate == pytest.approx(5e-4)  # Hu et al., table 9
    assert at_64.hyperparameters.learning_rate == pytest.approx(1e-3)
    assert at_16.head_learning_rate == HEAD_LEARNING_RATE  # a random head: at least 1e-3, to catch up
    # A head fitted first as a probe (LP-FT) has learned already: the body's rate, at most 1e-3.
    probed = spec_with(lora).model_copy(update={"head": HeadSpec(initialization="probe")})
    assert resolve(probed, examples=945, steps_per_epoch=60).head_learning_rate == pytest.approx(5e-4)
    prompt = spec_with({"type": "prompt_tuning"}).model_copy(
        update={"head": HeadSpec(initialization="probe")}
    )
    assert resolve(prompt, examples=945, steps_per_epoch=60).head_learning_rate == HEAD_LEARNING_RATE
    assert "Hu et al." in at_16.reasons["learning_rate"] and "945" in at_16.reasons["epochs"]
    full = resolve(spec_with({"type": "full"}), examples=945, steps_per_epoch=60)
    assert full.hyperparameters.learning_rate == pytest.approx(5e-5)  # BERT's


def test_numbers_given_stay_as_given_and_nothing_is_announced() -> None:
    spec = spec_with({"type": "bitfit"}, epochs=4, learning_rate=3e-3)
    choice = resolve(spec, examples=945, steps_per_epoch=60)
    assert (choice.hyperparameters.epochs, choice.hyperparameters.learning_rate) == (4, 3e-3)
    assert choice.head_learning_rate is None and choice.event() is None
    assert choice.spec.model_dump() == spec.model_dump()


def test_sgd_needs_a_number() -> None:
    with pytest.raises(ValidationError, match="give sgd a number"):
        spec_with({"type": "full"}, optimizer="sgd")
    assert (
        spec_with({"type": "full"}, optimizer="sgd", learning_rate=0.1).hyperparameters.learning_rate == 0.1
    )


def test_the_job_its_manifest_and_its_dry_run_agree_on_what_auto_chose(
    tmp_path: Path, tiny_bert_dir: Path
) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    spec = spec_with({"type": "bitfit"}, batch_size=4, logging_steps=1)
    events: list[Event] = []
    run(
        spec,
        tmp_path / "out",
        training_path=training,
        model_dirs=[tiny_bert_dir.parent],
        on_event=events.append,
    )
    chosen = next(e.data["resolved_hyperparameters"] for e in events if "resolved_hyperparameters" in e.data)
    # 10 texts at batch 4: 3 steps a pass, so the most passes, 10; BitFit's 3e-3 × √(4/16), and the
    # head at the body's rate, above its 1e-3 floor.
    assert chosen == {
        "epochs": 10,
        "learning_rate": pytest.approx(1.5e-3),
        "head_learning_rate": pytest.approx(1.5e-3),
        "head.pooling": "first",  # the tiny BERT's folder declares no sentence-transformers pooling
    }
    assert {e.data["total_steps"] for e in events if e.type == "metrics"} == {30}
    manifest = json.loads((tmp_path / "out" / "deltatune.json").read_text())
    assert manifest["spec"]["hyperparameters"]["epochs"] == 10
    assert manifest["spec"]["hyperparameters"]["learning_rate"] == pytest.approx(1.5e-3)
    assert manifest["spec"]["head"]["pooling"] == manifest["pooling"] == "first"
    assert spec.hyperparameters.epochs == "auto"  # the caller's spec keeps "auto"
    assert spec.head.pooling == "auto"
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    estimate = estimate_job(spec, tiny_bert_dir, report, worker=Worker())
    assert estimate.steps == 30 and estimate.hyperparameters["epochs"] == 10
    assert estimate.hyperparameters["learning_rate"] == pytest.approx(1.5e-3)
    assert estimate.hyperparameters["head_learning_rate"] == pytest.approx(1.5e-3)
    assert set(estimate.auto_reasons) == {"epochs", "learning_rate", "head.pooling"}
    assert estimate.hyperparameters["head.pooling"] == "first"


def test_under_auto_the_new_head_trains_at_its_own_rate(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))

    def head_scales(spec: JobSpec) -> list[float]:
        job = prepare(
            spec,
            training_path=training,
            validation_path=None,
            fisher_path=None,
            model_dirs=[tiny_bert_dir.parent],
            start_from=None,
            on_event=lambda _: None,
        )
        groups = _optimizer_groups(job)
        return sorted({g["lr_scale"] for g in groups if any(n.startswith("classifier.") for n in g["names"])})

    # full's BERT rate for the body, 1e-3 for the classifier: 20 times the body's.
    assert head_scales(spec_with({"type": "full"})) == [pytest.approx(1e-3 / 5e-5)]
    assert head_scales(spec_with({"type": "full"}, learning_rate=5e-5)) == [1.0]
