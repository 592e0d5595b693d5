"""A delta job's Δw compressed to LoRA by truncated SVD: the error, the rank choice, and PEFT's reload."""

import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from tuning import JobSpec, load_artifact, predict_logits, run
from tuning.artifacts.compress import compress_delta_artifact, energy_rank, truncated_svd
from tuning.artifacts.load import LoadedArtifact
from tuning.methods.delta.model import delta_layers

TEXTS = ["a wonderful story", "boring and bad", "the plot was really great", "sad", "love it", "awful"]
SINGULAR_VALUES = [4.0, 2.0, 1.0, 0.5]


def constructed(singular_values: list[float], out_dim: int = 7, in_dim: int = 5) -> torch.Tensor:
    """U·diag(σ)·Vᵀ with random orthonormal U and V: a matrix whose singular values we chose."""
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(
        torch.randn(out_dim, len(singular_values), generator=generator, dtype=torch.float64)
    )
    v, _ = torch.linalg.qr(
        torch.randn(in_dim, len(singular_values), generator=generator, dtype=torch.float64)
    )
    return (u * torch.tensor(singular_values, dtype=torch.float64)) @ v.T


def test_full_rank_is_exact_and_the_error_falls_with_rank() -> None:
    delta = constructed(SINGULAR_VALUES).float()
    errors = []
    for rank in range(1, 5):
        low_rank = truncated_svd(delta, rank=rank)
        assert low_rank.lora_A.shape == (rank, 5) and low_rank.lora_B.shape == (7, rank)
        approximation = low_rank.lora_B @ low_rank.lora_A
        measured = float(torch.linalg.matrix_norm(delta - approximation) / torch.linalg.matrix_norm(delta))
        assert low_rank.error == pytest.approx(measured, abs=1e-6)
        # Eckart–Young: what is left is exactly the dropped singular values.
        dropped = math.sqrt(sum(s**2 for s in SINGULAR_VALUES[rank:]) / sum(s**2 for s in SINGULAR_VALUES))
        assert low_rank.error == pytest.approx(dropped, abs=1e-6)
        errors.append(low_rank.error)
    assert errors[-1] < 1e-6
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == 4
    assert truncated_svd(delta, rank=50).rank == 5  # at most min(out, in)


@pytest.mark.parametrize(
    ("energy", "rank"),
    # σ² = 16, 4, 1, 0.25 of 21.25: cumulative fractions 0.753, 0.941, 0.988, 1.
    [(0.5, 1), (0.75, 1), (0.76, 2), (0.94, 2), (0.95, 3), (0.988, 3), (0.99, 4), (1.0, 4)],
)
def test_energy_picks_the_smallest_rank_keeping_that_fraction(energy: float, rank: int) -> None:
    assert energy_rank(torch.tensor(SINGULAR_VALUES), energy) == rank
    assert truncated_svd(constructed(SINGULAR_VALUES).float(), energy=energy).rank == rank


def test_a_zero_delta_compresses_to_rank_one_with_no_error() -> None:
    low_rank = truncated_svd(torch.zeros(6, 4), energy=0.9)
    assert (low_rank.rank, low_rank.error) == (1, 0.0)
    assert not (low_rank.lora_B @ low_rank.lora_A).any()


def delta_spec(base_model: str, export: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": base_model,
            "training_file": "file-train",
            "method": {"type": "delta"},
            "export": export,
            "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 5e-3},
        }
    )


@pytest.fixture(scope="module")
def delta_artifact(
    tiny_bert_dir: Path, sentiment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A delta job on every Linear of the tiny BERT, compressed at full rank (32 ≥ every layer's rank)."""
    out_dir = tmp_path_factory.mktemp("delta")
    run(
        delta_spec("tiny-bert", {"lora_rank": 32}),
        out_dir,
        training_path=sentiment_files[0],
        model_dirs=[tiny_bert_dir.parent],
    )
    return out_dir


def peft_model(base_dir: Path, adapter_dir: Path) -> PeftModel:
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    return PeftModel.from_pretrained(base, adapter_dir).eval()


def peft_lora_layers(model: PeftModel) -> list[str]:
    inner = model.get_base_model()
    return [name for name, module in inner.named_modules() if isinstance(module, LoraLayer)]


def peft_logits(model: PeftModel, loaded: LoadedArtifact) -> torch.Tensor:
    inputs = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


def with_deltas(loaded: LoadedArtifact, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """The delta model's logits with each Δw replaced (Δw given in W's layout), then restored."""
    layers = delta_layers(loaded.model)
    kept = {name: layer.delta.detach().clone() for name, layer in layers.items()}
    with torch.no_grad():
        for name, layer in layers.items():
            layer.delta.copy_(deltas[name])
        replaced = predict_logits(loaded, TEXTS)
        for name, layer in layers.items():
            layer.delta.copy_(kept[name])
    return replaced


def test_the_job_writes_lora_in_peft_layout_with_its_report(
    delta_artifact: Path, tiny_bert_dir: Path
) -> None:
    manifest = json.loads((delta_artifact / "deltatune.json").read_text())
    assert {"lora/adapter_config.json", "lora/adapter_model.safetensors"} <= set(manifest["files"])
    report = manifest["lora_compression"]
    loaded = load_artifact(delta_artifact, [tiny_bert_dir.parent], device=torch.device("cpu"))
    layers = delta_layers(loaded.model)
    assert set(report["layers"]) == set(layers) and len(layers) == 2 * 6 + 1
    # Full rank: each layer keeps min(out, in) = 32, and B·A is Δw up to float32 rounding.
    assert {entry["rank"] for entry in report["layers"].values()} == {32}
    assert report["rank"] == 32 and report["energy"] is None
    assert report["relative_error"] < 1e-5 and report["max_relative_error"] < 1e-5

    config = json.loads((delta_artifact / "lora" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["modules_to_save"]) == (32, 32, ["classifier"])
    assert sorted(config["target_modules"]) == sorted(layers)
    assert "rank_pattern" not in config and "alpha_pattern" not in config

    model = peft_model(tiny_bert_dir, delta_artifact / "lora")
    assert set(peft_lora_layers(model)) == set(layers)
    # float32 rounding of both paths, relative to logits that reach ~100 here (the probe-fitted head
    # on separable data, then ten epochs at 2e-2).
    torch.testing.assert_close(
        peft_logits(model, loaded), predict_logits(loaded, TEXTS), atol=1e-4, rtol=1e-5
    )


@pytest.mark.parametrize(("rank", "energy"), [(1, None), (4, None), (None, 0.6)])
def test_lower_ranks_load_in_peft_within_their_reported_error(
    rank: int | None, energy: float | None, delta_artifact: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    model_dirs = [tiny_bert_dir.parent]
    report = compress_delta_artifact(
        delta_artifact, tmp_path, rank=rank, energy=energy, model_dirs=model_dirs
    )
    loaded = load_artifact(delta_artifact, [tiny_bert_dir.parent], device=torch.device("cpu"))
    layers = delta_layers(loaded.model)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    ranks = {name: saved[f"base_model.model.{name}.lora_A.weight"].shape[0] for name in layers}
    assert {name: entry["rank"] for name, entry in report["layers"].items()} == ranks
    if energy is not None:
        for name, layer in layers.items():  # each layer's own smallest rank keeping that energy
            singular_values = torch.linalg.svdvals(layer.delta.detach().double())
            assert ranks[name] == energy_rank(singular_values, energy)
        assert len(set(ranks.values())) > 1  # so PEFT needs rank_pattern and alpha_pattern
    assert 0 < report["relative_error"] < 1

    model = peft_model(tiny_bert_dir, tmp_path)
    peft = peft_logits(model, loaded)
    # PEFT computes W + B·A exactly: the delta model with each Δw replaced by B·A.
    products = {
        name: saved[f"base_model.model.{name}.lora_B.weight"]
        @ saved[f"base_model.model.{name}.lora_A.weight"]
        for name in layers
    }
    torch.testing.assert_close(peft, with_deltas(loaded, products), atol=1e-4, rtol=0)
    # And no further from the delta model than the reported error suggests: dropping a fraction of
    # Δw moves the logits by less than that fraction of what the whole Δw moved them.
    exact = predict_logits(loaded, TEXTS)
    base = with_deltas(loaded, {name: torch.zeros_like(layer.delta) for name, layer in layers.items()})
    gap = float((peft - exact).abs().max())
    assert 0 < gap <= report["relative_error"] * float((exact - base).abs().max()) + 1e-4


def test_gpt2_conv1d_deltas_compress_with_fan_in_fan_out(
    tiny_gpt2_dir: Path, sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    run(
        delta_spec("tiny-gpt2", {"lora_energy": 0.8}),
        tmp_path,
        training_path=sentiment_files[0],
        model_dirs=[tiny_gpt2_dir.parent],
    )
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert (config["fan_in_fan_out"], config["modules_to_save"]) == (True, ["score"])
    loaded = load_artifact(tmp_path, [tiny_gpt2_dir.parent], device=torch.device("cpu"))
    layers = delta_layers(loaded.model)
    assert len(layers) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
    saved = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    # PEFT's B·A is (out, in); Conv1D keeps W as (in, out), so the Δw it stands for is its transpose.
    products = {
        name: (
            saved[f"base_model.model.{name}.lora_B.weight"] @ saved[f"base_model.model.{name}.lora_A.weight"]
        ).T
        for name in layers
    }
    assert all(products[name].shape == layer.delta.shape for name, layer in layers.items())
    ranks = {name: saved[f"base_model.model.{name}.lora_A.weight"].shape[0] for name in layers}
    assert (
        config["rank_pattern"]
        == config["alpha_pattern"]
        == {name: rank for name, rank in ranks.items() if rank != config["r"]}
    )
    assert config["rank_pattern"]  # the energy asked for different ranks per layer
    model = peft_model(tiny_gpt2_dir, tmp_path / "lora")
    torch.testing.assert_close(peft_logits(model, loaded), with_deltas(loaded, products), atol=1e-4, rtol=0)

    # At full rank PEFT reproduces the delta model itself: the orientation was right.
    report = compress_delta_artifact(tmp_path, tmp_path / "full", rank=32, model_dirs=[tiny_gpt2_dir.parent])
    assert report["relative_error"] < 1e-5
    full = peft_model(tiny_gpt2_dir, tmp_path / "full")
    torch.testing.assert_close(peft_logits(full, loaded), predict_logits(loaded, TEXTS), atol=1e-4, rtol=0)
