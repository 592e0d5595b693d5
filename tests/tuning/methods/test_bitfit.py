"""BitFit: only the bias terms (LayerNorm's and GPT-2's Conv1D's included) and the head train."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from tuning import JobSpec, SpecError
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.bitfit import BitFitMethod
from tuning.task_model import TaskModel, load_classifier

MakeSpec = Callable[..., JobSpec]
LABELS = ["negative", "positive"]


def classifier(model_dir: Path, seed: int = 0) -> TaskModel:
    torch.manual_seed(seed)  # the head's initial weights
    return load_classifier(model_dir, LABELS, max_seq_length=32)


def apply_bitfit(built: TaskModel) -> set[str]:
    context = MethodContext(built.tokenizer, built.head_modules, find_layers(built.model, built.head_modules))
    apply_method(built.model, BitFitMethod(), context)
    return set(trainable_names(built.model))


def biases_of(model: nn.Module, kind: type[nn.Module]) -> set[str]:
    return {
        f"{name}.bias"
        for name, module in model.named_modules()
        if isinstance(module, kind) and getattr(module, "bias", None) is not None
    }


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_gpt2_dir"])
def test_every_bias_and_the_head_train_and_nothing_else(
    model_fixture: str, request: pytest.FixtureRequest
) -> None:
    built = classifier(request.getfixturevalue(model_fixture))
    trainable = apply_bitfit(built)
    head = {name for name in trainable if name.startswith(tuple(built.head_modules))}
    assert head == {
        name for name, _ in built.model.named_parameters() if name.startswith(tuple(built.head_modules))
    }
    biases = trainable - head
    assert all(name.endswith(".bias") for name in biases)
    # Counted by module type, so a bias the name rule missed (or a weight it caught) shows up here.
    layer_norms = biases_of(built.model, nn.LayerNorm)
    projections = biases_of(built.model, nn.Linear) | biases_of(built.model, Conv1D)
    assert layer_norms and layer_norms <= biases
    assert biases == (layer_norms | projections) - head


def test_gpt2_conv1d_biases_train(tiny_gpt2_dir: Path) -> None:
    built = classifier(tiny_gpt2_dir)
    trainable = apply_bitfit(built)
    assert {"transformer.h.0.attn.c_attn.bias", "transformer.h.1.mlp.c_proj.bias"} <= trainable
    assert "score.weight" in trainable and "transformer.h.0.attn.c_attn.weight" not in trainable


def test_a_model_without_biases_is_refused(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    for name, module in list(built.model.named_modules()):
        if not name.startswith("classifier") and getattr(module, "bias", None) is not None:
            module.bias = None
    with pytest.raises(SpecError, match="bias terms, but this base model has none") as caught:
        apply_bitfit(built)
    assert caught.value.param == "method.type"


@pytest.mark.parametrize(
    ("model_name", "model_fixture"), [("tiny-bert", "tiny_bert_dir"), ("tiny-gpt2", "tiny_gpt2_dir")]
)
def test_after_training_only_biases_and_the_head_differ_from_the_base(
    model_name: str,
    model_fixture: str,
    request: pytest.FixtureRequest,
    tiny_spec: MakeSpec,
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
) -> None:
    model_dir = request.getfixturevalue(model_fixture)
    spec = tiny_spec(method={"type": "bitfit"}, epochs=1).model_copy(update={"base_model": model_name})
    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    )
    trained = dict(fitted.job.model.named_parameters())
    base = classifier(model_dir, spec.hyperparameters.seed)
    head = tuple(base.head_modules)
    changed = {name for name, start in base.model.named_parameters() if not torch.equal(trained[name], start)}
    backbone_changed = {name for name in changed if not name.startswith(head)}
    assert backbone_changed and all(name.endswith(".bias") for name in backbone_changed)
    # Every LayerNorm bias gets a gradient, so every one of them moved.
    assert biases_of(base.model, nn.LayerNorm) <= backbone_changed
    assert any(name.startswith(head) for name in changed)
