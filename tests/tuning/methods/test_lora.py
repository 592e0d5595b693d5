from pathlib import Path

import pytest
import torch
from torch import nn

from tuning.classifier import Classifier, load_classifier
from tuning.errors import SpecError
from tuning.methods.lora import LoraLinear, apply_lora, lora_layers, merge_lora, unmerge_lora
from tuning.spec import LoraMethod


@pytest.fixture()
def classifier(tiny_bert_dir: Path) -> Classifier:
    torch.manual_seed(0)
    return load_classifier(tiny_bert_dir, ["negative", "positive"], max_seq_length=32)


def tokens(classifier: Classifier) -> dict[str, torch.Tensor]:
    texts = ["a wonderful movie", "the plot was awful and boring", "ok"]
    return dict(classifier.tokenizer(texts, padding=True, return_tensors="pt"))


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def train_a_little(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int = 3) -> None:
    """A few real gradient steps, so lora_B is no longer zero."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = torch.tensor([1, 0, 1])
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(**inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


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


def test_whole_model_output_equals_the_base_at_init(classifier: Classifier) -> None:
    inputs = tokens(classifier)
    model = classifier.model.eval()
    before = logits(model, inputs)
    adapted = apply_lora(model, LoraMethod(r=4, alpha=8, target_modules=["query", "value", "dense"]))
    # Per layer: query, value and three dense (attention output, intermediate, output); plus the pooler.
    assert len(adapted) == 2 * 5 + 1
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-6, rtol=0)


def test_only_lora_and_the_head_require_grad(classifier: Classifier) -> None:
    apply_lora(
        classifier.model, LoraMethod(r=4, target_modules=["query", "value"]), exclude=classifier.head_modules
    )
    trainable = {name for name, p in classifier.model.named_parameters() if p.requires_grad}
    lora = {name for name in trainable if ".lora_A." in name or ".lora_B." in name}
    assert classifier.head_modules == ["classifier"]
    assert trainable - lora == {"classifier.weight", "classifier.bias"}
    assert len(lora) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)


def test_merged_equals_unmerged_and_unmerge_restores_w(classifier: Classifier) -> None:
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


def test_targets_match_exact_names_and_dotted_suffixes(classifier: Classifier) -> None:
    model = classifier.model
    exact = "bert.encoder.layer.1.attention.self.key"
    suffix = "attention.self.query"
    adapted = apply_lora(model, LoraMethod(target_modules=[exact, suffix]))
    assert sorted(adapted) == sorted(
        [exact, "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]
    )
    assert all(isinstance(model.get_submodule(name), LoraLinear) for name in adapted)


def test_a_partial_word_is_not_a_suffix(classifier: Classifier) -> None:
    with pytest.raises(SpecError) as caught:
        apply_lora(classifier.model, LoraMethod(target_modules=["uery"]))
    assert caught.value.param == "method.target_modules"
    for name in ("query", "key", "value", "dense"):
        assert name in caught.value.message


def test_the_head_is_never_wrapped(classifier: Classifier) -> None:
    with pytest.raises(SpecError, match="match no nn.Linear"):
        apply_lora(
            classifier.model, LoraMethod(target_modules=["classifier"]), exclude=classifier.head_modules
        )
    assert isinstance(classifier.model.get_submodule("classifier"), nn.Linear)
