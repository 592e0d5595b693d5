"""`merged/`: a plain transformers model with the job's delta folded in, loadable without deltatune."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tuning import JobSpec, load_artifact, predict_logits, run
from tuning.artifacts.merged import merged_copy
from tuning.methods.delta.model import delta_layers
from tuning.methods.lora.model import lora_layers

TEXTS = ["a wonderful story", "boring and bad", "the plot was really great", "sad", "love it", "awful"]

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lora-bert": ("tiny-bert", {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]}),
    "delta-bert": ("tiny-bert", {"type": "delta"}),
    "lora-gpt2": ("tiny-gpt2", {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["c_attn"]}),
    "delta-gpt2": ("tiny-gpt2", {"type": "delta", "target_modules": ["c_attn", "c_fc"]}),
}


def merged_spec(base_model: str, method: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": base_model,
            "training_file": "file-train",
            "method": method,
            "export": {"merged": True},
            "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 1e-2},
        }
    )


@pytest.mark.parametrize("case", list(CASES))
def test_the_merged_model_loads_in_transformers_with_the_artifacts_logits(
    case: str, tiny_bert_dir: Path, tiny_gpt2_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    base_model, method = CASES[case]
    model_dirs = [tiny_bert_dir.parent]  # holds tiny-gpt2 too

    result = run(
        merged_spec(base_model, method), tmp_path, training_path=sentiment_files[0], model_dirs=model_dirs
    )
    merged_files = sorted(name for name in result.files if name.startswith("merged/"))
    assert {"merged/config.json", "merged/model.safetensors", "merged/tokenizer.json"} <= set(merged_files)
    assert merged_files == sorted(f"merged/{p.name}" for p in (tmp_path / "merged").iterdir())
    manifest = json.loads((tmp_path / "deltatune.json").read_text())
    assert set(merged_files) <= set(manifest["files"])

    loaded = load_artifact(tmp_path, model_dirs, device=torch.device("cpu"))
    wrapped = lora_layers(loaded.model) | delta_layers(loaded.model)
    assert manifest["merged"]["merged_layers"] == len(wrapped) > 0
    # Plain weights under the base model's names: no lora_A, no Δw, no base_layer.
    stored = load_file(tmp_path / "merged" / "model.safetensors")
    assert all(
        "lora_" not in key and "base_layer" not in key and not key.endswith(".delta") for key in stored
    )
    assert {f"{name}.weight" for name in wrapped} <= set(stored)

    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    inputs = AutoTokenizer.from_pretrained(tmp_path / "merged")(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = merged(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    expected = predict_logits(loaded, TEXTS)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    # The folded delta is real: the base model with the same head gives other logits.
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    base_weights = AutoModelForSequenceClassification.from_pretrained(model_dirs[0] / base_model).state_dict()
    changed = [
        name for name in wrapped if not torch.equal(stored[f"{name}.weight"], base_weights[f"{name}.weight"])
    ]
    assert changed == list(wrapped)


def test_merging_leaves_the_trained_model_as_it_was(
    tiny_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = merged_spec("tiny-bert", {"type": "delta", "target_modules": ["query"]})
    run(spec, tmp_path, training_path=sentiment_files[0], model_dirs=[tiny_bert_dir.parent])
    loaded = load_artifact(tmp_path, [tiny_bert_dir.parent], device=torch.device("cpu"))
    before = predict_logits(loaded, TEXTS)
    weights = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    plain = merged_copy(loaded.model)
    assert plain is not loaded.model and not delta_layers(plain) and len(delta_layers(loaded.model)) == 2
    assert all(torch.equal(p, weights[name]) for name, p in loaded.model.named_parameters())
    assert predict_logits(loaded, TEXTS).equal(before)
