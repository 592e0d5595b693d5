"""Memory for big models (tuning.memory): gradient checkpointing trains the same with fewer saved
activations; a frozen base held in bf16 leaves what trains in float32; refusals name the field."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from tuning.build import apply_spec_method, prepare_classifier
from tuning.compat import NO_GRADIENT_CHECKPOINTING, check_spec_for_model
from tuning.errors import SpecError
from tuning.events import Event
from tuning.fit import fit
from tuning.memory import cast_frozen_to_bf16, enable_gradient_checkpointing, holds_bf16, restore_float32
from tuning.spec import JobSpec


def saved_activation_bytes(spec: JobSpec, model_dir: Path, *, checkpointing: bool) -> int:
    """Bytes autograd keeps for backward over one training forward of the built job's model."""
    classifier = prepare_classifier(spec, model_dir, ["negative", "positive"])
    apply_spec_method(spec, classifier)
    model = classifier.model.train()
    if checkpointing:
        enable_gradient_checkpointing(model)
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    ids = torch.randint(1000, 2000, (8, 48))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum()
    loss.backward()
    return saved


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "lora", "r": 4, "alpha": 8}])
def test_checkpointing_saves_less_for_backward(
    method: dict[str, object], tiny_bert_dir: Path, tiny_spec: Callable[..., JobSpec]
) -> None:
    spec = tiny_spec(method)
    plain = saved_activation_bytes(spec, tiny_bert_dir, checkpointing=False)
    checkpointed = saved_activation_bytes(spec, tiny_bert_dir, checkpointing=True)
    # Tiny BERT's two layers keep only their inputs (plus what sits outside them: embeddings, head).
    assert checkpointed < 0.5 * plain


def test_checkpointing_trains_to_the_same_loss(
    sentiment_files: tuple[Path, Path], model_dirs: list[Path], tiny_spec: Callable[..., JobSpec]
) -> None:
    """Dropout draws the same masks when a layer is recomputed: the same training, float rounding apart."""
    training, validation = sentiment_files

    def losses(checkpointing: bool) -> list[float]:
        events: list[Event] = []
        spec = tiny_spec(epochs=2, logging_steps=1, gradient_checkpointing=checkpointing)
        fit(
            spec,
            training_path=training,
            validation_path=validation,
            model_dirs=model_dirs,
            on_event=events.append,
        )
        return [event.data["train_loss"] for event in events if event.type == "metrics"]

    plain, checkpointed = losses(False), losses(True)
    assert len(plain) == len(checkpointed) == 16
    assert checkpointed == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_a_model_type_without_checkpointing_is_refused_naming_the_field(
    tiny_bert_dir: Path, tmp_path: Path, tiny_spec: Callable[..., JobSpec]
) -> None:
    config = (
        (tiny_bert_dir / "config.json").read_text().replace('"model_type": "bert"', '"model_type": "xlnet"')
    )
    model_dir = tmp_path / "xlnet-like"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(config)
    check_spec_for_model(tiny_spec(), model_dir)  # without checkpointing: no complaint
    with pytest.raises(SpecError) as refused:
        check_spec_for_model(tiny_spec(gradient_checkpointing=True), model_dir)
    assert refused.value.param == "hyperparameters.gradient_checkpointing"


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "roberta", "gpt2", "albert", "xlnet", "mpnet"])
def test_the_refused_model_types_are_transformers_own(model_type: str) -> None:
    model_class = getattr(transformers, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[model_type])
    assert (model_type in NO_GRADIENT_CHECKPOINTING) == (not model_class.supports_gradient_checkpointing)


def test_a_model_without_support_fails_at_the_worker_naming_the_field() -> None:
    with pytest.raises(SpecError) as refused:
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))
    assert refused.value.param == "hyperparameters.gradient_checkpointing"


def test_a_bf16_base_keeps_what_trains_in_float32(
    tiny_bert_dir: Path, tiny_spec: Callable[..., JobSpec]
) -> None:
    """The cast tuning.fit applies on CUDA, exercised on the CPU under CPU autocast."""
    classifier = prepare_classifier(tiny_spec(), tiny_bert_dir, ["negative", "positive"])
    apply_spec_method(tiny_spec(), classifier)
    model = classifier.model
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert cast_frozen_to_bf16(model) == frozen and holds_bf16(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    ids = torch.randint(1000, 2000, (4, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)
    restore_float32(model)
    assert not holds_bf16(model)
