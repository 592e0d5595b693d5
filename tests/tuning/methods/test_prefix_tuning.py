import inspect
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from tests.tuning.methods.helpers import logits, train_a_little
from tuning.errors import SpecError
from tuning.layers import find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.prefix_tuning import PrefixTuningMethod
from tuning.methods.prefix_tuning.model import (
    attach_prefix,
    attention_geometry,
    prefix_encoder,
    real_token_prefix,
)
from tuning.task_model import TaskModel, load_classifier

TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok"]
PROJECTION = {
    "prefix_encoder.embedding.weight",
    "prefix_encoder.transform.0.weight",
    "prefix_encoder.transform.0.bias",
    "prefix_encoder.transform.2.weight",
    "prefix_encoder.transform.2.bias",
}


def load(model_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)


def prefixed(model_dir: Path, **options: object) -> TaskModel:
    classifier = load(model_dir)
    context = MethodContext(classifier.tokenizer, classifier.head_modules, find_layers(classifier.model, []))
    apply_method(classifier.model, PrefixTuningMethod.model_validate(options), context)
    classifier.model.eval()
    return classifier


def tokens(classifier: TaskModel, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    inputs = dict(classifier.tokenizer(texts, padding=True, return_tensors="pt"))
    if "token_type_ids" not in _forward_names(classifier.model):
        inputs.pop("token_type_ids", None)
    return inputs


def _forward_names(model: nn.Module) -> set[str]:
    return set(inspect.signature(type(model).forward).parameters)


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_only_the_prefix_and_head_train_and_the_rest_stays_bit_identical(
    which: str, projection: bool, tiny_bert_dir: Path, tiny_gpt2_dir: Path
) -> None:
    classifier = prefixed(
        tiny_bert_dir if which == "bert" else tiny_gpt2_dir, num_virtual_tokens=4, projection=projection
    )
    model = classifier.model
    head = {f"{h}.{k}" for h in classifier.head_modules for k, _ in model.get_submodule(h).named_parameters()}
    method = PROJECTION if projection else {"prefix_encoder.embedding.weight"}
    assert set(trainable_names(model)) == method | head
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_a_little(model, tokens(classifier))
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == method | head  # every trained tensor moved, every other one is bit-identical


def test_in_a_decoder_a_prefix_of_real_tokens_is_those_tokens_in_front_of_the_text(
    tiny_gpt2_dir: Path,
) -> None:
    # Causal attention: the keys and values of tokens X at every layer do not depend on what follows
    # them, so a prefix holding X's keys and values must make the model see exactly [X; text]. This
    # pins the layout (key before value, layer by layer, heads, positions starting after the prefix).
    classifier = prefixed(tiny_gpt2_dir, num_virtual_tokens=4)
    model = classifier.model
    plain = load(tiny_gpt2_dir).model.eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("prefix_")})
    x = torch.tensor([[2023, 3185, 2001, 2307]])
    encoder = prefix_encoder(model)
    with torch.no_grad():
        encoder.embedding.weight.copy_(real_token_prefix(plain, encoder.geometry, x, encoder.cache_name))
    for text in TEXTS:
        ids = classifier.tokenizer(text, return_tensors="pt")["input_ids"]
        ours = logits(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        joined = torch.cat((x, ids), dim=1)
        expected = logits(plain, {"input_ids": joined, "attention_mask": torch.ones_like(joined)})
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_padding_and_the_mask_keep_rows_independent(tiny_bert_dir: Path) -> None:
    classifier = prefixed(tiny_bert_dir, num_virtual_tokens=4)
    batched = logits(classifier.model, tokens(classifier))
    for row, text in enumerate(TEXTS):
        torch.testing.assert_close(
            batched[row : row + 1], logits(classifier.model, tokens(classifier, [text])), atol=1e-5, rtol=0
        )


def test_the_prefix_changes_what_every_layer_attends_to(tiny_bert_dir: Path) -> None:
    classifier = prefixed(tiny_bert_dir, num_virtual_tokens=4)
    inputs = tokens(classifier)
    plain = load(tiny_bert_dir).model.eval()
    plain.load_state_dict(classifier.model.state_dict(), strict=False)
    mine = classifier.model(**inputs, output_hidden_states=True).hidden_states
    theirs = plain(**inputs, output_hidden_states=True).hidden_states
    for layer in range(1, len(mine)):
        assert not torch.allclose(mine[layer], theirs[layer], atol=1e-4)


def test_dropping_the_projection_keeps_the_outputs(tiny_bert_dir: Path) -> None:
    classifier = prefixed(tiny_bert_dir, num_virtual_tokens=4, projection=True, encoder_hidden_size=16)
    model, inputs = classifier.model, tokens(classifier)
    train_a_little(model, inputs)
    before = logits(model, inputs)
    encoder = prefix_encoder(model)
    encoder.drop_projection()
    assert encoder.transform is None
    assert encoder.embedding.weight.shape == (4, encoder.geometry.width)
    torch.testing.assert_close(logits(model, inputs), before, atol=1e-6, rtol=0)


def test_a_text_as_long_as_the_position_table_is_cut_to_make_room(tiny_bert_dir: Path) -> None:
    classifier = prefixed(tiny_bert_dir, num_virtual_tokens=8)
    limit = classifier.model.config.max_position_embeddings
    ids = torch.randint(1000, 2000, (2, limit))
    full = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cut = {"input_ids": ids[:, : limit - 8], "attention_mask": torch.ones_like(ids[:, : limit - 8])}
    torch.testing.assert_close(logits(classifier.model, full), logits(classifier.model, cut), atol=0, rtol=0)


def test_geometry_follows_grouped_query_attention() -> None:
    class Config:
        num_hidden_layers, num_attention_heads, hidden_size, num_key_value_heads = 3, 8, 64, 2

    geometry = attention_geometry(Config())
    assert (geometry.layers, geometry.heads, geometry.head_dim, geometry.width) == (3, 2, 8, 3 * 2 * 16)


def test_a_model_that_takes_no_cache_is_refused() -> None:
    config = DistilBertConfig(
        vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=32
    )
    model = DistilBertForSequenceClassification(config)
    with pytest.raises(SpecError) as caught:
        attach_prefix(model, PrefixTuningMethod(num_virtual_tokens=2))
    assert caught.value.param == "method.type"
    assert "cache" in caught.value.message
    assert not hasattr(model, "prefix_encoder")
