"""Frozen-prefix reuse: the cut forward equals the full one, reuse trains what recompute trains, and
the fallbacks (memory, architecture), gradual unfreezing's moving boundary and resumes hold."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from tests.tuning.test_resume import Files, assert_resumed_exactly, interrupted_and_resumed
from tuning import Event, JobSpec, run
from tuning.frozen_prefix import FrozenPartModel, ModelCut, frozen_part_name
from tuning.layers import find_layers

TOLERANCE = 1e-5  # float32: the cut forward runs the same operations on the same values
FOUR_LAYERS = {"num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64}


def tiny_classifier(kind: str) -> PreTrainedModel:
    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, **FOUR_LAYERS))
    if kind == "roberta":
        config = RobertaConfig(vocab_size=100, hidden_size=32, max_position_embeddings=70, pad_token_id=1)
        return RobertaForSequenceClassification(config.__class__(**config.to_dict() | FOUR_LAYERS))
    if kind == "distilbert":
        config = DistilBertConfig(vocab_size=100, dim=32, n_layers=4, n_heads=4, hidden_dim=64)
        return DistilBertForSequenceClassification(config)
    config = GPT2Config(vocab_size=100, n_embd=32, n_layer=4, n_head=4, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def padded_batch() -> dict[str, torch.Tensor]:
    """Three examples of 9, 5 and 2 tokens, right-padded with 0 as tuning.batching pads them."""
    lengths = [9, 5, 2]
    input_ids = torch.zeros((3, 9), dtype=torch.long)
    mask = torch.zeros((3, 9), dtype=torch.long)
    generator = torch.Generator().manual_seed(1)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(3, 100, (length,), generator=generator)
        mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("boundary", [0, 1, 3, 4])
def test_the_model_run_from_the_cached_boundary_gives_the_full_forwards_logits(
    kind: str, boundary: int
) -> None:
    model = tiny_classifier(kind).eval()
    cut = ModelCut(model, find_layers(model, ["classifier"]))
    assert cut.refusal is None
    batch = padded_batch()
    view = FrozenPartModel(model, cut)
    view.boundary = boundary
    with torch.no_grad():
        full = model(**batch).logits
        states = cut.boundary_states(batch, boundary) * batch["attention_mask"][..., None]
        replayed = view(frozen_outputs=states, attention_mask=batch["attention_mask"]).logits
        again = model(**batch).logits  # the cut is undone: the model is whole again
    assert torch.allclose(replayed, full, atol=TOLERANCE, rtol=TOLERANCE)
    assert torch.equal(again, full)
    assert len(cut.stack) == 4 and cut.backbone.get_input_embeddings() is not None


def test_a_decoder_is_not_cut() -> None:
    model = tiny_classifier("gpt2")
    assert "not run one embeddings module" in str(ModelCut(model, find_layers(model, ["score"])).refusal)


def test_the_frozen_part_runs_without_dropout_in_training_too() -> None:
    model = tiny_classifier("bert")
    view = FrozenPartModel(model, ModelCut(model, find_layers(model, ["classifier"])))
    view.boundary = 2
    view.train()
    assert not model.bert.embeddings.training and not model.bert.encoder.layer[1].training
    assert model.bert.encoder.layer[2].training and model.dropout.training


def test_the_frozen_part_is_named_by_its_layers() -> None:
    assert frozen_part_name(4, 6) == "embeddings and layers 0–3"
    assert frozen_part_name(1, 6) == "embeddings and layer 0"
    assert frozen_part_name(6, 6) == "embeddings and layers 0–5 (all 6)"


# Training on the tiny BERT (2 layers): reuse against recompute, the same frozen part without dropout.

PARTIAL_TOP = {"type": "partial", "last_n_layers": 1}
PROBE = {"type": "partial", "head_only": True}
LORA_TOP = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["query", "value"]}
LORA_TOP |= {"layers_to_transform": [1]}


def train_job(
    spec: JobSpec, out: Path, files: tuple[Path, Path], model_dirs: list[Path]
) -> tuple[dict[str, torch.Tensor], dict[str, float], list[Event]]:
    events: list[Event] = []
    result = run(
        spec,
        out,
        training_path=files[0],
        validation_path=files[1],
        model_dirs=model_dirs,
        on_event=events.append,
    )
    weights = {f"{p.name}:{n}": t for p in sorted(out.glob("*.safetensors")) for n, t in load_file(p).items()}
    return weights, result.metrics, events


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys() and got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def frozen_events(events: list[Event]) -> list[Event]:
    return [event for event in events if "frozen_layers" in event.data]


@pytest.mark.parametrize("method", [PARTIAL_TOP, PROBE, LORA_TOP], ids=["partial", "probe", "lora_top"])
def test_reuse_trains_the_weights_recompute_trains(
    method: dict[str, Any],
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    """`auto` reuses here (2 epochs, layers frozen), as its event says."""
    modes = ("auto", "recompute", "dropout") if method is PARTIAL_TOP else ("auto", "recompute")
    runs = {
        mode: train_job(
            tiny_spec(method, epochs=2, frozen_layers=mode), tmp_path / mode, sentiment_files, model_dirs
        )
        for mode in modes
    }
    (reused, reused_metrics, events), (recomputed, recomputed_metrics, _) = runs["auto"], runs["recompute"]
    assert_same_weights(reused, recomputed)
    assert reused_metrics["val_accuracy"] == recomputed_metrics["val_accuracy"]
    assert reused_metrics["val_loss"] == pytest.approx(recomputed_metrics["val_loss"], rel=1e-4)
    if "dropout" in runs:  # the setting does something: with dropout in the frozen layers training differs
        assert any(not torch.allclose(runs["dropout"][0][name], reused[name]) for name in reused)
    (announced,) = frozen_events(events)
    boundary = 2 if method is PROBE else 1
    assert announced.data["frozen_layers"] == "reuse"
    assert announced.data["frozen_prefix_layers"] == boundary
    assert announced.data["cached_examples"] == 64 + 32
    assert announced.message.startswith(
        f"the frozen {frozen_part_name(boundary, 2)} run without dropout; "
        "their outputs are computed once per example and reused ("
    )


def test_auto_says_why_it_does_not_reuse_for_one_epoch(
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    _, _, one = train_job(tiny_spec(PROBE, epochs=1), tmp_path / "one", sentiment_files, model_dirs)
    (declined,) = frozen_events(one)
    assert declined.data["frozen_layers"] == "dropout"
    assert declined.message == (
        "the frozen embeddings and layers 0–1 (all 2) run with dropout, as in training, every step: "
        "each boundary would serve under 2 epochs, so caching would not pay "
        "(hyperparameters.frozen_layers auto)"
    )
    # LoRA in every layer freezes no layer: nothing to say.
    _, _, lora = train_job(tiny_spec(epochs=1), tmp_path / "lora", sentiment_files, model_dirs)
    assert frozen_events(lora) == []


def test_over_the_memory_bound_it_recomputes_and_says_so(
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    bounded = tiny_spec(PARTIAL_TOP, epochs=2, frozen_layers="reuse", frozen_outputs_max_mb=0)
    weights, _, events = train_job(bounded, tmp_path / "bounded", sentiment_files, model_dirs)
    (fallback,) = frozen_events(events)
    assert fallback.data["frozen_layers"] == "recompute"
    assert "computed again each step; not reused" in fallback.message
    assert "over hyperparameters.frozen_outputs_max_mb (0 MB)" in fallback.message
    recompute = tiny_spec(PARTIAL_TOP, epochs=2, frozen_layers="recompute")
    expected, _, _ = train_job(recompute, tmp_path / "recompute", sentiment_files, model_dirs)
    assert_same_weights(weights, expected)


def test_gradual_unfreezing_caches_again_as_the_boundary_moves_down(
    tiny_spec: Callable[..., JobSpec],
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    """Stages of an epoch: the head (all 2 layers frozen), layer 1, layer 0 (the embeddings alone are
    frozen: recomputed), the embeddings (nothing frozen)."""
    runs = {}
    for mode in ("reuse", "recompute"):
        spec = tiny_spec({"type": "full"}, epochs=4, frozen_layers=mode, learning_rate=1e-3).model_dump()
        spec = JobSpec.model_validate(spec | {"gradual_unfreeze": {"every": 1}})
        runs[mode] = train_job(spec, tmp_path / mode, sentiment_files, model_dirs)
    (reused, _, events), (recomputed, _, _) = runs["reuse"], runs["recompute"]
    assert [(e.data["frozen_layers"], e.data["frozen_prefix_layers"]) for e in frozen_events(events)] == [
        ("reuse", 2),
        ("reuse", 1),
        ("recompute", 0),
    ]
    assert_same_weights(reused, recomputed)


def test_a_job_that_reuses_resumes_as_if_never_interrupted(
    model_dirs: list[Path], sentiment_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Killed in stage 1 of a gradual unfreezing (every 3 steps, 8 steps an epoch): the resumed job
    caches again at stage 1's boundary and ends with the uninterrupted job's weights and events."""
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "full"},
            "gradual_unfreeze": {"every": 3, "unit": "steps"},
            "hyperparameters": {
                "epochs": 2,
                "batch_size": 8,
                "learning_rate": 1e-3,
                "logging_steps": 1,
                "frozen_layers": "reuse",
            },
        }
    )
    files = Files(sentiment_files[0], sentiment_files[1], model_dirs)
    whole, killed, resumed, k = interrupted_and_resumed(spec, tmp_path, files, every_steps=4, kill_at=6)
    assert k == 4
    assert_resumed_exactly(whole, killed, resumed, k)
    assert [e.data["frozen_prefix_layers"] for e in frozen_events(resumed.events)][0] == 1


def test_reuse_is_refused_where_it_cannot_apply(tiny_spec: Callable[..., JobSpec]) -> None:
    spec = tiny_spec(PROBE).model_dump()
    spec["hyperparameters"]["frozen_layers"] = "reuse"
    with pytest.raises(ValidationError, match="regularizers.kl compares"):
        JobSpec.model_validate(spec | {"method": {"type": "full"}, "regularizers": {"kl": {"weight": 1.0}}})
    lm = {"base_model": "tiny-gpt2", "task": "causal_lm", "training_file": "f", "method": {"type": "full"}}
    with pytest.raises(ValidationError, match="apply to sequence_classification"):
        JobSpec.model_validate(lm | {"hyperparameters": {"frozen_layers": "recompute"}})
    with pytest.raises(ValidationError, match="frozen_outputs_max_mb"):
        JobSpec.model_validate(lm | {"hyperparameters": {"frozen_outputs_max_mb": -1}})
