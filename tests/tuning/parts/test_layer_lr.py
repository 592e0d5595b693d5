"""Layer-wise learning rates: the optimizer's groups give lr·decay^(distance from the top) per parameter."""

from pathlib import Path

import pytest
import torch

from tuning.layers import LayerMap, find_layers
from tuning.methods.apply import MethodContext, apply_method
from tuning.methods.full import FullMethod
from tuning.methods.lora import LoraMethod
from tuning.optim import make_optimizer, parameter_groups, set_learning_rate
from tuning.parts.layer_lr import layer_lr_scales
from tuning.spec import Hyperparameters, Method
from tuning.task_model import TaskModel, load_classifier

LR = 1e-3


def build(model_dir: Path, method: Method) -> tuple[TaskModel, LayerMap]:
    torch.manual_seed(0)
    built = load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)
    layers = find_layers(built.model, built.head_modules)
    apply_method(built.model, method, MethodContext(built.tokenizer, built.head_modules, layers))
    return built, layers


def optimizer_lr_by_name(built: TaskModel, scales: dict[str, float], weight_decay: float) -> dict[str, float]:
    """What the optimizer itself will use, after the loop sets this step's rate."""
    optimizer = make_optimizer(
        parameter_groups(built.model, weight_decay, scales), Hyperparameters(learning_rate=LR)
    )
    set_learning_rate(optimizer, LR)
    return {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}


def expected_scale(name: str) -> float:
    """Tiny BERT, L = 2, decay 0.5: head and pooler 1, layer 1 ½, layer 0 ¼, embeddings ⅛."""
    if name.startswith(("classifier.", "bert.pooler.")):
        return 1.0
    if name.startswith("bert.encoder.layer.1."):
        return 0.5
    if name.startswith("bert.encoder.layer.0."):
        return 0.25
    assert name.startswith("bert.embeddings.")
    return 0.125


def test_full_fine_tune_groups_decay_from_the_head_down_to_the_embeddings(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, FullMethod())
    scales = layer_lr_scales(built.model, layers, 0.5)
    lrs = optimizer_lr_by_name(built, scales, weight_decay=0.01)
    names = [name for name, _ in built.model.named_parameters()]
    assert sorted(lrs) == sorted(names)
    for name in names:
        assert lrs[name] == pytest.approx(LR * expected_scale(name)), name
    assert lrs["bert.embeddings.word_embeddings.weight"] == min(lrs.values())
    assert lrs["classifier.weight"] == max(lrs.values())
    optimizer = make_optimizer(parameter_groups(built.model, 0.01, scales), Hyperparameters(learning_rate=LR))
    # One group per (decayed or not, scale): 4 depths x (matrices, biases and LayerNorm gains).
    assert len(optimizer.param_groups) == 8
    assert len({(group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups}) == 8


def test_only_trainable_parameters_get_a_scale(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, LoraMethod(r=2, target_modules=["query"]))
    scales = layer_lr_scales(built.model, layers, 0.8)
    trainable = {name for name, parameter in built.model.named_parameters() if parameter.requires_grad}
    assert set(scales) == trainable
    assert len(scales) == 2 * 2 + 2  # (A, B) in 2 layers, the head's weight and bias
    assert scales["classifier.weight"] == 1.0
    assert scales["bert.encoder.layer.1.attention.self.query.lora_A.weight"] == pytest.approx(0.8)
    assert scales["bert.encoder.layer.0.attention.self.query.lora_B.weight"] == pytest.approx(0.64)


def test_decay_one_is_a_single_rate(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, FullMethod())
    lrs = optimizer_lr_by_name(built, layer_lr_scales(built.model, layers, 1.0), weight_decay=0.0)
    assert set(lrs.values()) == {LR}
