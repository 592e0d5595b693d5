"""head.pooling: resolving "auto" from the base model's folder, the mean over real tokens only, what the
head trains, the artifact reloaded by deltatune, by PEFT + transformers and as a merged model."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tests.tuning.test_estimate import WORKER
from tests.tuning.test_frozen_prefix import PARTIAL_TOP, PROBE, assert_same_weights, frozen_events, train_job
from tuning import Event, JobSpec, RunResult, load_artifact, predict_logits, run
from tuning.auto import resolve
from tuning.build import prepare_classifier
from tuning.data import read_classification_file
from tuning.errors import SpecError
from tuning.estimate import estimate_job
from tuning.fit import fit
from tuning.methods import METHODS
from tuning.parts.mean_pooler import MeanPooler
from tuning.parts.pooling import (
    resolve_pooling,
    sentence_transformers_pooling,
    write_pooling_files,
)
from tuning.validation import validate_files

TEXTS = ["a fine film", "dull and long, a waste of an evening", "good"]


@pytest.fixture(scope="module")
def mean_bert_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT in a folder that declares sentence-transformers mean pooling, as MiniLM's does;
    in a models folder of its own, so other tests' listings of the shared one do not see it."""
    folder = tmp_path_factory.mktemp("mean-models") / "tiny-bert-mean"
    shutil.copytree(tiny_bert_dir, folder)
    write_pooling_files(folder, "mean", 32)
    return folder


def spec(base_model: str = "tiny-bert-mean", pooling: str = "auto", **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": base_model,
            "training_file": "file-train",
            "head": {"pooling": pooling},
            "hyperparameters": {"epochs": 8, "batch_size": 8, "learning_rate": 2e-2},
        }
        | extra
    )


def test_auto_is_mean_only_where_the_folder_declares_mean_pooling(
    tiny_bert_dir: Path, mean_bert_dir: Path, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    assert sentence_transformers_pooling(mean_bert_dir) == "mean"
    assert resolve_pooling("auto", mean_bert_dir)[0] == "mean"
    assert sentence_transformers_pooling(tiny_bert_dir) is None
    assert resolve_pooling("auto", tiny_bert_dir)[0] == "first"
    assert resolve_pooling("first", mean_bert_dir)[0] == "first"
    cls = tmp_path / "cls"
    shutil.copytree(mean_bert_dir, cls)
    config = cls / "1_Pooling" / "config.json"
    pooling = json.loads(config.read_text()) | {
        "pooling_mode_mean_tokens": False,
        "pooling_mode_cls_token": True,
    }
    config.write_text(json.dumps(pooling))
    assert resolve_pooling("auto", cls) == ("first", resolve_pooling("auto", cls)[1])
    assert "cls_token" in resolve_pooling("auto", cls)[1]
    # A RoBERTa folder that declares mean pooling: its class cannot pool the mean, auto stays first.
    roberta = tmp_path / "roberta"
    shutil.copytree(tiny_roberta_dir, roberta)
    write_pooling_files(roberta, "mean", 32)
    assert resolve_pooling("auto", roberta)[0] == "first"


@pytest.mark.parametrize("model", ["tiny_roberta_dir", "tiny_gpt2_dir"])
def test_mean_on_a_model_that_cannot_is_a_spec_error_naming_head_pooling(
    model: str, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(SpecError) as error:
        resolve_pooling("mean", request.getfixturevalue(model))
    assert error.value.param == "head.pooling"
    assert "'first' or 'auto'" in str(error.value)


def test_causal_lm_takes_no_pooling() -> None:
    with pytest.raises(ValueError, match="no head to set"):
        spec(task="causal_lm", pooling="mean")


def test_mean_head_is_the_classifier_alone_and_ignores_padding(mean_bert_dir: Path) -> None:
    torch.manual_seed(0)
    task_model = prepare_classifier(spec(), mean_bert_dir, ["neg", "pos"])
    model = task_model.model.eval()
    assert isinstance(model.bert.pooler, MeanPooler)
    assert task_model.head_modules == ["classifier"]
    assert not any(".pooler." in name for name in model.state_dict())
    assert not any(".pooler." in name for name in task_model.pretrained)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    tokenizer = AutoTokenizer.from_pretrained(mean_bert_dir)
    logits = []
    for length in (8, 32):
        inputs = tokenizer(TEXTS[:1], padding="max_length", max_length=length, return_tensors="pt")
        with torch.no_grad():
            logits.append(
                model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            )
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-6)
    # and it is the mean of the real tokens' last hidden states, through the classifier
    inputs = tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**inputs).last_hidden_state
        torch.testing.assert_close(model.classifier(hidden.mean(1)), logits[0])


def test_auto_reports_the_pooling_it_chose(mean_bert_dir: Path, tiny_bert_dir: Path) -> None:
    auto = spec().model_copy(
        update={"hyperparameters": spec().hyperparameters.model_copy(update={"epochs": "auto"})}
    )
    chosen = resolve(auto, examples=64, steps_per_epoch=8, base_path=mean_bert_dir)
    assert chosen.spec.head.pooling == "mean"
    assert "sentence-transformers" in chosen.reasons["head.pooling"]
    event = chosen.event()
    assert event is not None and event.data["resolved_hyperparameters"]["head.pooling"] == "mean"
    assert "head.pooling mean" in event.message
    assert resolve(auto, examples=64, steps_per_epoch=8, base_path=tiny_bert_dir).spec.head.pooling == "first"
    assert auto.head.pooling == "auto"  # the stored spec keeps it


def mean_pooled_logits(
    model: torch.nn.Module, backbone: torch.nn.Module, classifier: torch.nn.Module, folder: Path
) -> torch.Tensor:
    """What a user writes (README): the backbone's last hidden states, their mean over the attention
    mask, then the saved classifier."""
    inputs = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return classifier((hidden * mask).sum(1) / mask.sum(1))  # type: ignore[no-any-return]


def run_on_mean_bert(
    job: JobSpec, out_dir: Path, sentiment_files: tuple[Path, Path], mean_bert_dir: Path
) -> RunResult:
    """`job` trained on the sentiment files and validated on their second, its base the mean-pooling BERT."""
    return run(
        job,
        out_dir,
        training_path=sentiment_files[0],
        validation_path=sentiment_files[1],
        model_dirs=[mean_bert_dir.parent],
    )


def test_a_mean_pooled_lora_job_reloads_in_deltatune_peft_and_merged(
    mean_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    job = spec(
        method={"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        export={"merged": True},
    )
    result = run_on_mean_bert(job, tmp_path, sentiment_files, mean_bert_dir)
    manifest = json.loads((tmp_path / "deltatune.json").read_text())
    assert manifest["pooling"] == "mean" and manifest["spec"]["head"]["pooling"] == "mean"
    assert {"merged/modules.json", "merged/1_Pooling/config.json"} <= set(result.files)

    loaded = load_artifact(tmp_path, [mean_bert_dir.parent])
    validation = read_classification_file(sentiment_files[1])
    ours = predict_logits(loaded, [e.text for e in validation])
    labels = [loaded.labels.index(e.label) for e in validation]
    accuracy = float((ours.argmax(1) == torch.tensor(labels)).double().mean())
    assert accuracy == pytest.approx(result.metrics["val_accuracy"])
    expected = predict_logits(loaded, TEXTS)

    base = AutoModelForSequenceClassification.from_pretrained(mean_bert_dir, num_labels=2)
    peft = PeftModel.from_pretrained(base, tmp_path).eval()
    inner: Any = peft.base_model.model
    torch.testing.assert_close(
        mean_pooled_logits(peft, inner.bert, inner.classifier, mean_bert_dir), expected
    )

    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(
        mean_pooled_logits(merged, merged.bert, merged.classifier, tmp_path / "merged"),
        expected,
        rtol=1e-4,
        atol=1e-5,
    )
    assert sentence_transformers_pooling(tmp_path / "merged") == "mean"


def test_an_artifact_from_before_head_pooling_reloads_with_first_token_pooling(
    mean_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    job = spec(pooling="first", method={"type": "bitfit"})
    run(job, tmp_path, training_path=sentiment_files[0], model_dirs=[mean_bert_dir.parent])
    expected = predict_logits(load_artifact(tmp_path, [mean_bert_dir.parent]), TEXTS)
    path = tmp_path / "deltatune.json"
    manifest = json.loads(path.read_text())
    assert manifest["pooling"] == "first"
    del manifest["pooling"], manifest["spec"]["head"]["pooling"]  # what an older deltatune wrote
    path.write_text(json.dumps(manifest))
    torch.testing.assert_close(
        predict_logits(load_artifact(tmp_path, [mean_bert_dir.parent]), TEXTS), expected
    )


@pytest.mark.parametrize("method", [PARTIAL_TOP, PROBE], ids=["partial", "probe"])
def test_frozen_layers_reuse_stays_exact_with_mean_pooling(
    method: dict[str, Any], mean_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """The cut forward hands the backbone the same mask, so the cached frozen part is reused (its
    parity check passes) and trains what recomputing it trains."""
    runs = {
        mode: train_job(
            spec(method=method, hyperparameters={"epochs": 2, "batch_size": 8, "frozen_layers": mode}),
            tmp_path / mode,
            sentiment_files,
            [mean_bert_dir.parent],
        )
        for mode in ("reuse", "recompute")
    }
    (reused, metrics, events), (recomputed, recomputed_metrics, _) = runs["reuse"], runs["recompute"]
    assert not any(".pooler." in name for name in reused)
    assert_same_weights(reused, recomputed)
    assert metrics["val_accuracy"] == recomputed_metrics["val_accuracy"]
    assert [e.data["frozen_layers"] for e in frozen_events(events)] == ["reuse"]


@pytest.mark.parametrize(
    "method", [{"type": "lora", "r": 4, "alpha": 8}, {"type": "full"}], ids=["lora", "full"]
)
def test_the_dry_run_counts_what_a_mean_pooled_job_trains(
    method: dict[str, Any], mean_bert_dir: Path, tmp_path: Path
) -> None:
    """No pooler: the head is the classifier alone, and a full job's weights lack the pooler's."""
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    job = spec(method=method | ({"target_modules": ["query", "value"]} if method["type"] == "lora" else {}))
    job = job.model_copy(update={"hyperparameters": job.hyperparameters.model_copy(update={"epochs": 1})})
    events: list[Event] = []
    fit(job, training_path=training, model_dirs=[mean_bert_dir.parent], on_event=events.append)
    counted = next(e.data["trainable_parameters"] for e in events if "trainable_parameters" in e.data)
    report = validate_files(job, mean_bert_dir, {"training_file": training})
    estimate = estimate_job(job, mean_bert_dir, report, worker=WORKER)
    assert estimate.trainable_parameters == counted
    assert estimate.hyperparameters["head.pooling"] == "mean"
    if method["type"] == "lora":
        assert counted == 1_024 + 32 * 2 + 2  # the LoRA matrices and the classifier, no pooler (32·32+32)


def test_validation_refuses_mean_on_a_model_that_cannot(tiny_roberta_dir: Path, tmp_path: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    with pytest.raises(SpecError) as error:
        validate_files(spec("tiny-roberta", pooling="mean"), tiny_roberta_dir, {"training_file": training})
    assert error.value.param == "head.pooling"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_mean_pooled_and_reloads(
    name: str, mean_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Prompt tuning's virtual tokens are averaged in (the backbone's mask covers them); prefix
    tuning's mask is longer than the hidden states and only its text columns count."""
    method = {"type": name} | dict(METHODS[name].example)
    job = spec(method=method, hyperparameters={"epochs": 2, "batch_size": 8})
    result = run_on_mean_bert(job, tmp_path, sentiment_files, mean_bert_dir)
    loaded = load_artifact(tmp_path, [mean_bert_dir.parent])
    assert loaded.manifest["pooling"] == "mean"
    validation = read_classification_file(sentiment_files[1])
    ours = predict_logits(loaded, [e.text for e in validation])
    labels = torch.tensor([loaded.labels.index(e.label) for e in validation])
    assert float((ours.argmax(1) == labels).double().mean()) == pytest.approx(result.metrics["val_accuracy"])
