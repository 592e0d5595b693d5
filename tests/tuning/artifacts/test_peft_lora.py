"""The artifact against PEFT itself: key names, config fields, and logits after a reload."""

import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tuning import JobSpec, RunResult, load_artifact, predict_logits, run
from tuning.data import read_classification_file
from tuning.methods.lora.model import lora_layers

MakeSpec = Callable[..., JobSpec]

PEFT_CONFIG_FIELDS = {
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "modules_to_save",
    "bias",
    "fan_in_fan_out",
    "inference_mode",
}


def train_artifact(
    spec: JobSpec, out_dir: Path, files: tuple[Path, Path], model_dirs: list[Path]
) -> RunResult:
    return run(spec, out_dir, training_path=files[0], validation_path=files[1], model_dirs=model_dirs)


def peft_model(base_dir: Path, artifact_dir: Path, num_labels: int) -> PeftModel:
    """What a PEFT user does: the plain base model, then PeftModel.from_pretrained."""
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    return PeftModel.from_pretrained(base, artifact_dir).eval()


def peft_logits(base_dir: Path, artifact_dir: Path, texts: list[str], num_labels: int) -> torch.Tensor:
    """PEFT's logits for `texts`, tokenized as a PEFT user would."""
    model = peft_model(base_dir, artifact_dir, num_labels)
    inputs = AutoTokenizer.from_pretrained(base_dir)(
        texts, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


@pytest.fixture(scope="module")
def trained(
    tiny_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunResult, JobSpec]:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "hyperparameters": {"epochs": 10, "batch_size": 8, "learning_rate": 2e-2},
        }
    )
    out_dir = tmp_path_factory.mktemp("artifact")
    return out_dir, train_artifact(spec, out_dir, sentiment_files, [tiny_bert_dir.parent]), spec


def test_files_and_adapter_config_fields(trained: tuple[Path, RunResult, JobSpec]) -> None:
    out_dir, result, _ = trained
    assert sorted(result.files) == ["adapter_config.json", "adapter_model.safetensors", "deltatune.json"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(result.files)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    assert set(config) == PEFT_CONFIG_FIELDS
    assert config | {"target_modules": None} == {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": "tiny-bert",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": None,
        "modules_to_save": ["classifier"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    assert config["target_modules"] == ["query", "value"]


def test_tensor_names_equal_what_peft_itself_saves(
    trained: tuple[Path, RunResult, JobSpec], tiny_bert_dir: Path
) -> None:
    out_dir, _, _ = trained
    config = json.loads((out_dir / "adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    peft_model = get_peft_model(base, LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"}))
    theirs = {key: tensor.shape for key, tensor in get_peft_model_state_dict(peft_model).items()}
    ours = {key: tensor.shape for key, tensor in load_file(out_dir / "adapter_model.safetensors").items()}
    assert ours == theirs
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in ours
    assert "base_model.model.classifier.weight" in ours


def test_peft_reload_reproduces_our_logits_and_the_reported_accuracy(
    trained: tuple[Path, RunResult, JobSpec], tiny_bert_dir: Path, sentiment_files: tuple[Path, Path]
) -> None:
    out_dir, result, _ = trained
    validation = read_classification_file(sentiment_files[1])
    texts = [example.text for example in validation]

    loaded = load_artifact(out_dir, [tiny_bert_dir.parent])
    ours = predict_logits(loaded, texts)
    theirs = peft_logits(tiny_bert_dir, out_dir, texts, num_labels=2)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    predicted = [loaded.labels[i] for i in theirs.argmax(dim=-1).tolist()]
    accuracy = sum(p == e.label for p, e in zip(predicted, validation, strict=True)) / len(validation)
    assert accuracy == pytest.approx(result.metrics["val_accuracy"])
    assert accuracy >= 0.9


def test_the_trained_head_comes_back_not_a_random_one(
    trained: tuple[Path, RunResult, JobSpec], tiny_bert_dir: Path
) -> None:
    out_dir, _, _ = trained
    saved = load_file(out_dir / "adapter_model.safetensors")["base_model.model.classifier.weight"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    fresh_head = base.classifier.weight.detach().clone()
    reloaded = PeftModel.from_pretrained(base, out_dir)
    head = reloaded.get_submodule("base_model.model.classifier.modules_to_save.default")
    assert isinstance(head, torch.nn.Linear)
    assert torch.equal(head.weight, saved)
    assert not torch.allclose(saved, fresh_head, atol=1e-3)


def test_manifest_describes_the_job(trained: tuple[Path, RunResult, JobSpec], tiny_bert_dir: Path) -> None:
    out_dir, result, spec = trained
    manifest = json.loads((out_dir / "deltatune.json").read_text())
    assert (manifest["format_version"], manifest["layout"], manifest["task"]) == (
        2,
        "peft",
        "sequence_classification",
    )
    # As trained: problem_type and head.pooling resolved (a tiny BERT declares no sentence pooling).
    assert JobSpec.model_validate(manifest["spec"]) == spec.model_copy(
        update={"problem_type": "single_label", "head": spec.head.model_copy(update={"pooling": "first"})}
    )
    assert manifest["labels"] == {"0": "negative", "1": "positive"}
    weights = (tiny_bert_dir / "model.safetensors").read_bytes()
    assert manifest["base_model"] == {
        "id": "tiny-bert",
        "weights_sha256": {"model.safetensors": hashlib.sha256(weights).hexdigest()},
    }
    assert manifest["metrics"] == result.metrics
    for library in ("torch", "transformers"):
        assert manifest["versions"][library] == importlib.metadata.version(library)
    assert manifest["created_at"].endswith("+00:00")


def test_targets_peft_would_match_in_the_head_are_written_as_exact_names(
    tiny_roberta_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    # RoBERTa's head has a `dense` Linear of its own: deltatune leaves the head to train in full, PEFT
    # would wrap `classifier.dense` too, so the config must list the layers actually adapted.
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-roberta",
            "training_file": "file-train",
            "method": {"type": "lora", "r": 2, "alpha": 4, "target_modules": ["dense"]},
            "hyperparameters": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-2},
        }
    )
    out_dir = tmp_path / "out"
    train_artifact(spec, out_dir, sentiment_files, [tiny_roberta_dir.parent])
    config = json.loads((out_dir / "adapter_config.json").read_text())
    assert config["target_modules"] == [
        f"roberta.encoder.layer.{i}.{module}.dense"
        for i in (0, 1)
        for module in ("attention.output", "intermediate", "output")
    ]

    texts = ["a wonderful story", "boring and bad"]
    ours = predict_logits(load_artifact(out_dir, [tiny_roberta_dir.parent]), texts)
    torch.testing.assert_close(peft_logits(tiny_roberta_dir, out_dir, texts, 2), ours, atol=1e-4, rtol=0)


def peft_ranks(model: PeftModel) -> dict[str, int]:
    """The layers PEFT wrapped (names in the base model) and the rank it gave each."""
    inner = model.get_base_model()
    return {
        name: module.r["default"] for name, module in inner.named_modules() if isinstance(module, LoraLayer)
    }


def our_ranks(out_dir: Path, model_dirs: list[Path]) -> dict[str, int]:
    loaded = load_artifact(out_dir, model_dirs)
    return {name: layer.lora_A.out_features for name, layer in lora_layers(loaded.model).items()}


def lora_spec(base_model: str, method: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": base_model,
            "training_file": "file-train",
            "method": {"type": "lora", **method},
            "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 2e-2},
        }
    )


TEXTS = ["a wonderful story", "boring and bad", "the plot was really great", "sad"]


def test_peft_reproduces_rslora_rank_pattern_and_layers_to_transform(
    tiny_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    pattern = {"value": 2, "intermediate.dense": 6}
    spec = lora_spec(
        "tiny-bert",
        {
            "r": 4,
            "alpha": 8,
            "target_modules": ["query", "value", "dense"],
            "use_rslora": True,
            "layers_to_transform": [1],
            "rank_pattern": pattern,
        },
    )
    model_dirs = [tiny_bert_dir.parent]
    train_artifact(spec, tmp_path, sentiment_files, model_dirs)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    added = {
        "use_rslora": True,
        "layers_to_transform": [1],
        "layers_pattern": "layer",
        "rank_pattern": pattern,
    }
    assert set(config) == PEFT_CONFIG_FIELDS | set(added)
    assert {key: config[key] for key in added} == added
    assert config["target_modules"] == ["query", "value", "dense"]

    ours = our_ranks(tmp_path, model_dirs)
    assert ours == {
        "bert.encoder.layer.1.attention.self.query": 4,
        "bert.encoder.layer.1.attention.self.value": 2,
        "bert.encoder.layer.1.attention.output.dense": 4,
        "bert.encoder.layer.1.intermediate.dense": 6,
        "bert.encoder.layer.1.output.dense": 4,
    }
    assert peft_ranks(peft_model(tiny_bert_dir, tmp_path, 2)) == ours
    expected = predict_logits(load_artifact(tmp_path, model_dirs), TEXTS)
    torch.testing.assert_close(peft_logits(tiny_bert_dir, tmp_path, TEXTS, 2), expected, atol=1e-4, rtol=0)


def test_peft_reproduces_gpt2_conv1d_lora(
    tiny_gpt2_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = lora_spec("tiny-gpt2", {"r": 4, "alpha": 8, "target_modules": ["c_attn", "c_proj"]})
    model_dirs = [tiny_gpt2_dir.parent]
    train_artifact(spec, tmp_path, sentiment_files, model_dirs)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert set(config) == PEFT_CONFIG_FIELDS
    assert (config["fan_in_fan_out"], config["target_modules"], config["modules_to_save"]) == (
        True,
        ["c_attn", "c_proj"],
        ["score"],
    )
    saved = load_file(tmp_path / "adapter_model.safetensors")
    b_key = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"
    assert saved[b_key].shape == (96, 4) and saved[b_key].abs().sum() > 0  # (out = 3·32, r): trained

    assert peft_ranks(peft_model(tiny_gpt2_dir, tmp_path, 2)) == our_ranks(tmp_path, model_dirs)
    expected = predict_logits(load_artifact(tmp_path, model_dirs), TEXTS)
    torch.testing.assert_close(peft_logits(tiny_gpt2_dir, tmp_path, TEXTS, 2), expected, atol=1e-4, rtol=0)
