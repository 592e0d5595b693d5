import math
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from tests.tuning.methods.helpers import logits, train_a_little
from tuning.artifacts.merged import merged_copy
from tuning.errors import SpecError
from tuning.folded_evaluation import folded
from tuning.layers import find_layers
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.lora.model import LoraLinear, apply, apply_lora, lora_layers, merge_lora, unmerge_lora
from tuning.optim import parameter_groups
from tuning.spec import LoraMethod
from tuning.task_model import TaskModel, load_classifier


@pytest.fixture()
def classifier(tiny_bert_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(tiny_bert_dir, ["negative", "positive"], max_seq_length=32)


def tokens(classifier: TaskModel) -> dict[str, torch.Tensor]:
    texts = ["a wonderful movie", "the plot was awful and boring", "ok"]
    return dict(classifier.tokenizer(texts, padding=True, return_tensors="pt"))


def test_layer_computes_base_plus_scaled_low_rank_update() -> None:
    torch.manual_seed(0)
    layer = LoraLinear(6, 5, r=2, alpha=8, dropout=0.0)
    x = torch.randn(4, 6)
    assert torch.equal(layer(x), layer.base_layer(x))  # B = 0 at init
    assert layer.lora_A.weight.shape == (2, 6) and layer.lora_B.weight.shape == (5, 2)
    assert layer.lora_A.weight.abs().sum() > 0 and not layer.lora_B.weight.any()

    nn.init.normal_(layer.lora_B.weight)
    expected = layer.base_layer(x) + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * (8 / 2)
    torch.testing.assert_close(layer(x), expected)


def test_dropout_is_on_the_lora_path_only() -> None:
    torch.manual_seed(0)
    layer = LoraLinear(8, 8, r=4, alpha=4, dropout=0.5).train()
    x = torch.randn(3, 8)
    # With B = 0 the dropped path contributes nothing: the base output is untouched by dropout.
    assert torch.equal(layer(x), layer.base_layer(x))
    nn.init.normal_(layer.lora_B.weight)
    assert not torch.equal(layer(x), layer(x))  # training mode: dropout draws differ
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_whole_model_output_equals_the_base_at_init(classifier: TaskModel) -> None:
    inputs = tokens(classifier)
    model = classifier.model.eval()
    before = logits(model, inputs)
    adapted = apply_lora(model, LoraMethod(r=4, alpha=8, target_modules=["query", "value", "dense"]))
    # Per layer: query, value and three dense (attention output, intermediate, output); plus the pooler.
    assert len(adapted) == 2 * 5 + 1
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-6, rtol=0)


def test_only_lora_and_the_head_require_grad(classifier: TaskModel) -> None:
    apply_lora(
        classifier.model, LoraMethod(r=4, target_modules=["query", "value"]), exclude=classifier.head_modules
    )
    trainable = {name for name, p in classifier.model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if ".lora_A." in name or ".lora_B." in name}
    assert classifier.head_modules == ["classifier"]
    assert trainable - lora == {"classifier.weight", "classifier.bias"}
    assert len(lora) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)


def test_merged_equals_unmerged_and_unmerge_restores_w(classifier: TaskModel) -> None:
    model, inputs = classifier.model, tokens(classifier)
    apply_lora(model, LoraMethod(r=4, alpha=8), exclude=classifier.head_modules)
    original = {name: layer.base_layer.weight.clone() for name, layer in lora_layers(model).items()}
    train_a_little(model, inputs)
    assert all(layer.lora_B.weight.abs().sum() > 0 for layer in lora_layers(model).values())

    unmerged = logits(model, inputs)
    merge_lora(model)
    changed = [
        not torch.equal(layer.base_layer.weight, original[n]) for n, layer in lora_layers(model).items()
    ]
    assert all(changed)
    torch.testing.assert_close(logits(model, inputs), unmerged, atol=1e-5, rtol=0)

    unmerge_lora(model)
    for name, layer in lora_layers(model).items():
        torch.testing.assert_close(layer.base_layer.weight, original[name], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(model, inputs), unmerged, atol=1e-6, rtol=0)


def test_targets_match_exact_names_and_dotted_suffixes(classifier: TaskModel) -> None:
    model = classifier.model
    exact = "bert.encoder.layer.1.attention.self.key"
    suffix = "attention.self.query"
    adapted = apply_lora(model, LoraMethod(target_modules=[exact, suffix]))
    assert sorted(adapted) == sorted(
        [exact, "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]
    )
    assert all(isinstance(model.get_submodule(name), LoraLinear) for name in adapted)


def test_a_partial_word_is_not_a_suffix(classifier: TaskModel) -> None:
    with pytest.raises(SpecError) as caught:
        apply_lora(classifier.model, LoraMethod(target_modules=["uery"]))
    assert caught.value.param == "method.target_modules"
    for name in ("query", "key", "value", "dense"):
        assert name in caught.value.message


def test_the_head_is_never_wrapped(classifier: TaskModel) -> None:
    with pytest.raises(SpecError, match="match no nn.Linear"):
        apply_lora(
            classifier.model, LoraMethod(target_modules=["classifier"]), exclude=classifier.head_modules
        )
    assert isinstance(classifier.model.get_submodule("classifier"), nn.Linear)


def apply_to(classifier: TaskModel, method: LoraMethod) -> Applied:
    """The method as a job applies it: head excluded, layers mapped before the rewrite."""
    layers = find_layers(classifier.model, classifier.head_modules)
    return apply(
        classifier.model, method, MethodContext(classifier.tokenizer, classifier.head_modules, layers)
    )


def low_rank_term(layer: LoraLinear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return layer(x) - layer.base_layer(x)


def test_rslora_scales_by_alpha_over_the_root_of_r() -> None:
    torch.manual_seed(0)
    plain = LoraLinear(8, 8, r=16, alpha=4)
    stable = LoraLinear(8, 8, r=16, alpha=4, use_rslora=True)
    nn.init.normal_(plain.lora_B.weight)
    stable.load_state_dict(plain.state_dict())  # same W, A and B
    assert (plain.scaling, stable.scaling) == (4 / 16, 4 / math.sqrt(16))
    x = torch.randn(5, 8)
    # Same A and B: the update differs by exactly the ratio of the two scalings, √r.
    torch.testing.assert_close(low_rank_term(stable, x), low_rank_term(plain, x) * math.sqrt(16))


def test_rslora_reaches_every_wrapped_layer(classifier: TaskModel) -> None:
    apply_to(classifier, LoraMethod(r=9, alpha=6, use_rslora=True))
    scalings = {layer.scaling for layer in lora_layers(classifier.model).values()}
    assert scalings == {6 / 3}


def test_layers_to_transform_wraps_only_those_layers(classifier: TaskModel) -> None:
    applied = apply_to(
        classifier, LoraMethod(target_modules=["query", "value", "dense"], layers_to_transform=[1])
    )
    expected = [f"bert.encoder.layer.1.{path}" for path in ("attention.self.query", "attention.self.value")]
    expected += [f"bert.encoder.layer.1.{path}" for path in ("attention.output.dense", "intermediate.dense")]
    expected += ["bert.encoder.layer.1.output.dense"]
    assert sorted(lora_layers(classifier.model)) == sorted(expected)
    assert applied.details["lora_layers"] == list(lora_layers(classifier.model))
    # Layer 0 and the pooler, outside layer 1, stay plain Linears.
    assert type(classifier.model.get_submodule("bert.encoder.layer.0.attention.self.query")) is nn.Linear
    assert type(classifier.model.get_submodule("bert.pooler.dense")) is nn.Linear


def test_layers_to_transform_naming_no_target_is_refused(classifier: TaskModel) -> None:
    with pytest.raises(SpecError, match=r"in layers \[5\]") as caught:
        apply_to(classifier, LoraMethod(target_modules=["query"], layers_to_transform=[5]))
    assert caught.value.param == "method.target_modules"


def test_rank_pattern_gives_those_layers_their_rank(classifier: TaskModel) -> None:
    first_query = "bert.encoder.layer.0.attention.self.query"
    pattern = {first_query: 6, "value": 2}
    apply_to(classifier, LoraMethod(r=4, alpha=8, target_modules=["query", "value"], rank_pattern=pattern))
    layers = lora_layers(classifier.model)
    ranks = {name: (layer.lora_A.out_features, layer.lora_B.in_features) for name, layer in layers.items()}
    assert ranks == {
        first_query: (6, 6),
        "bert.encoder.layer.0.attention.self.value": (2, 2),
        "bert.encoder.layer.1.attention.self.query": (4, 4),
        "bert.encoder.layer.1.attention.self.value": (2, 2),
    }
    # PEFT's semantics: alpha stays, so each layer scales by alpha over its own rank.
    assert {name: layer.scaling for name, layer in layers.items()} == {
        name: 8 / rank for name, (rank, _) in ranks.items()
    }


def test_loraplus_speeds_up_b_only(classifier: TaskModel) -> None:
    applied = apply_to(classifier, LoraMethod(r=4, loraplus_lr_ratio=16))
    b_names = {f"{name}.lora_B.weight" for name in lora_layers(classifier.model)}
    assert applied.lr_scales == {name: 16 for name in b_names}

    groups = parameter_groups(classifier.model, 0.01, applied.lr_scales)
    scale_of = {name: group["lr_scale"] for group in groups for name in group["names"]}
    trainable = {name for name, p in classifier.model.named_parameters() if p.requires_grad}
    assert set(scale_of) == trainable
    assert {name for name, scale in scale_of.items() if scale == 16} == b_names
    assert {scale for name, scale in scale_of.items() if name not in b_names} == {1.0}


def test_without_loraplus_no_learning_rate_changes(classifier: TaskModel) -> None:
    assert apply_to(classifier, LoraMethod(r=4)).lr_scales == {}


def test_deviations_are_the_dense_updates_under_the_pretrained_names(classifier: TaskModel) -> None:
    pretrained = dict(classifier.model.named_parameters())
    applied = apply_to(classifier, LoraMethod(r=2, alpha=4))
    assert applied.deviations is not None
    assert all(d.abs().sum() == 0 for _, d in applied.deviations())  # B = 0 at init
    train_a_little(classifier.model, tokens(classifier))
    deviations = dict(applied.deviations())
    layers = lora_layers(classifier.model)
    assert set(deviations) == {f"{name}.weight" for name in layers}
    for name, layer in layers.items():
        delta = deviations[f"{name}.weight"]
        assert delta.shape == pretrained[f"{name}.weight"].shape and delta.requires_grad
        expected = layer.lora_B.weight @ layer.lora_A.weight * layer.scaling
        torch.testing.assert_close(delta, expected)
        assert delta.abs().sum() > 0
    # With grad: a penalty on the deviations trains A and B.
    torch.stack([d.square().sum() for d in deviations.values()]).sum().backward()
    assert all(layer.lora_B.weight.grad is not None for layer in layers.values())


def test_merged_layer_is_a_plain_layer_with_the_update_folded_in(classifier: TaskModel) -> None:
    model, inputs = classifier.model, tokens(classifier)
    apply_to(classifier, LoraMethod(r=4, alpha=8))
    train_a_little(model, inputs)
    before = logits(model, inputs)
    for layer in lora_layers(model).values():
        merged = layer.merged_layer()
        assert type(merged) is nn.Linear
        torch.testing.assert_close(merged.weight, layer.base_layer.weight + layer.delta_weight())
        assert merged.weight.data_ptr() != layer.base_layer.weight.data_ptr()  # W itself untouched
    plain = merged_copy(model)
    assert not lora_layers(plain) and lora_layers(model)
    torch.testing.assert_close(logits(plain, inputs), before, atol=1e-5, rtol=0)


@pytest.fixture()
def gpt2(tiny_gpt2_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(tiny_gpt2_dir, ["negative", "positive"], max_seq_length=32)


def test_gpt2_conv1d_is_wrapped_and_unchanged_at_init(gpt2: TaskModel) -> None:
    inputs = tokens(gpt2)
    model = gpt2.model.eval()
    before = logits(model, inputs)
    applied = apply_to(gpt2, LoraMethod(r=4, alpha=8, target_modules=["c_attn", "c_fc"]))
    assert applied.details["lora_layers"] == [
        f"transformer.h.{i}.{path}" for i in (0, 1) for path in ("attn.c_attn", "mlp.c_fc")
    ]
    for layer in lora_layers(model).values():
        assert isinstance(layer.base_layer, Conv1D) and layer.fan_in_fan_out
        # PEFT's shapes for Conv1D: A is (r, in), B is (out, r); the dense update is W's (in, out).
        nx, nf = layer.base_layer.weight.shape
        assert layer.lora_A.weight.shape == (4, nx) and layer.lora_B.weight.shape == (nf, 4)
        assert layer.delta_weight().shape == (nx, nf)
    assert logits(model, inputs).equal(before)


def test_gpt2_merge_reproduces_the_outputs(gpt2: TaskModel) -> None:
    model, inputs = gpt2.model, tokens(gpt2)
    applied = apply_to(gpt2, LoraMethod(r=4, alpha=8, target_modules=["c_attn", "c_proj"]))
    train_a_little(model, inputs)
    trained = logits(model, inputs)
    assert applied.deviations is not None and all(d.abs().sum() > 0 for _, d in applied.deviations())

    plain = merged_copy(model)
    assert all(type(plain.get_submodule(name)) is Conv1D for name in lora_layers(model))
    torch.testing.assert_close(logits(plain, inputs), trained, atol=1e-5, rtol=0)
    merge_lora(model)  # in place, too
    torch.testing.assert_close(logits(model, inputs), trained, atol=1e-5, rtol=0)
    unmerge_lora(model)
    torch.testing.assert_close(logits(model, inputs), trained, atol=1e-5, rtol=0)


def test_folded_layers_compute_the_update_from_one_weight_and_leave_w_alone(model_dir: Path) -> None:
    """tuning.folded_evaluation: eval-mode forwards read W + s·B·A, kept beside W, never written into it."""
    torch.manual_seed(0)
    task_model = load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)
    model, inputs = task_model.model, tokens(task_model)
    gpt2 = task_model.model.config.model_type == "gpt2"  # Conv1D layers, their weight (in, out)
    targets = ["c_attn", "c_proj"] if gpt2 else ["query", "value", "dense"]
    apply_lora(model, LoraMethod(r=4, alpha=8, target_modules=targets), exclude=task_model.head_modules)
    train_a_little(model, inputs)
    layers = lora_layers(model)
    bases = {name: layer.base_layer.weight.clone() for name, layer in layers.items()}
    unfolded = logits(model, inputs)

    with folded(model):
        assert all(layer.folded is not None for layer in layers.values())
        # The branches are no longer read: B zeroed inside the fold changes nothing.
        saved_b = {name: layer.lora_B.weight.detach().clone() for name, layer in layers.items()}
        with torch.no_grad():
            for layer in layers.values():
                layer.lora_B.weight.zero_()
        torch.testing.assert_close(logits(model, inputs), unfolded, atol=1e-5, rtol=0)
        with torch.no_grad():
            for name, layer in layers.items():
                layer.lora_B.weight.copy_(saved_b[name])
        # Training mode runs the branches, so A and B get gradients as ever.
        model.train()
        model(**inputs).logits.sum().backward()
        assert all(layer.lora_A.weight.grad is not None for layer in layers.values())
        model.eval()

    assert all(layer.folded is None for layer in layers.values())
    assert all(torch.equal(layer.base_layer.weight, bases[name]) for name, layer in layers.items())
    assert torch.equal(logits(model, inputs), unfolded)
