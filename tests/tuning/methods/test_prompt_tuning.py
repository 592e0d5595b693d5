import copy
from pathlib import Path

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification

from tests.tuning.methods.helpers import logits, train_a_little
from tuning.layers import find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.prompt_tuning import PromptTuningMethod
from tuning.methods.prompt_tuning.model import prompt_encoder, text_init_ids
from tuning.methods.virtual_tokens import word_embeddings
from tuning.task_model import TaskModel, load_classifier

TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok"]


def load(model_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)


def prompted(model_dir: Path, **options: object) -> TaskModel:
    classifier = load(model_dir)
    context = MethodContext(classifier.tokenizer, classifier.head_modules, find_layers(classifier.model, []))
    apply_method(classifier.model, PromptTuningMethod.model_validate(options), context)
    classifier.model.eval()
    return classifier


def tokens(classifier: TaskModel, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    return dict(classifier.tokenizer(texts, padding=True, return_tensors="pt"))


def test_the_prompt_is_prepended_to_the_word_embeddings(tiny_bert_dir: Path) -> None:
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=4)
    plain = load(tiny_bert_dir).model.eval()
    plain.load_state_dict(classifier.model.state_dict(), strict=False)  # the same head
    inputs = tokens(classifier)
    prompt = prompt_encoder(classifier.model).embedding.weight.detach()
    # What the paper (and PEFT) compute: [P; E(x)] as inputs_embeds, the mask and types extended.
    batch = inputs["input_ids"].shape[0]
    expected = logits(
        plain,
        {
            "inputs_embeds": torch.cat(
                (prompt.expand(batch, -1, -1), plain.get_input_embeddings()(inputs["input_ids"])), 1
            ),
            "attention_mask": torch.cat(
                (torch.ones(batch, 4, dtype=torch.long), inputs["attention_mask"]), 1
            ),
            "token_type_ids": torch.cat(
                (torch.zeros(batch, 4, dtype=torch.long), inputs["token_type_ids"]), 1
            ),
        },
    )
    torch.testing.assert_close(logits(classifier.model, inputs), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(logits(plain, inputs), expected, atol=1e-4)  # the prompt does change them


def test_only_the_prompt_and_head_train_and_the_rest_stays_bit_identical(tiny_bert_dir: Path) -> None:
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=3)
    model = classifier.model
    assert set(trainable_names(model)) == {
        "prompt_encoder.embedding.weight",
        "classifier.weight",
        "classifier.bias",
    }
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_a_little(model, tokens(classifier))
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"prompt_encoder.embedding.weight", "classifier.weight", "classifier.bias"}


def test_random_init_is_drawn_at_the_word_embeddings_scale(tiny_bert_dir: Path) -> None:
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=64)
    prompt = prompt_encoder(classifier.model).embedding.weight
    words = word_embeddings(classifier.model, "").weight
    assert prompt.std().item() == pytest.approx(words.std().item(), rel=0.1)
    assert abs(prompt.mean().item()) < 3 * words.std().item() / (prompt.numel() ** 0.5) + 1e-3


def test_text_init_equals_peft_text_init(tiny_bert_dir: Path) -> None:
    text = "classify the sentiment"
    for n in (3, 11):  # shorter than the text's ids (cut) and longer (repeated)
        ours = prompt_encoder(
            prompted(tiny_bert_dir, num_virtual_tokens=n, init="text", init_text=text).model
        )
        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
        config = PromptTuningConfig(
            task_type="SEQ_CLS",
            num_virtual_tokens=n,
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=str(tiny_bert_dir),
        )
        theirs = get_peft_model(base, config).get_submodule("prompt_encoder.default.embedding")
        assert isinstance(theirs, nn.Embedding)
        torch.testing.assert_close(ours.embedding.weight, theirs.weight, atol=0, rtol=0)


def test_text_init_ids_repeat_then_cut(tiny_bert_dir: Path) -> None:
    tokenizer = load(tiny_bert_dir).tokenizer
    ids = tokenizer("great")["input_ids"]  # [CLS] great [SEP]
    assert text_init_ids(tokenizer, "great", 7) == (ids * 3)[:7]
    assert text_init_ids(tokenizer, "great", 2) == ids[:2]


def test_a_text_as_long_as_the_position_table_is_cut_to_make_room(tiny_bert_dir: Path) -> None:
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=8)
    limit = classifier.model.config.max_position_embeddings
    ids = torch.randint(1000, 2000, (2, limit))
    full = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cut = {"input_ids": ids[:, : limit - 8], "attention_mask": torch.ones_like(ids[:, : limit - 8])}
    torch.testing.assert_close(logits(classifier.model, full), logits(classifier.model, cut), atol=0, rtol=0)


def test_a_stray_call_to_the_embedding_layer_gets_no_prompt(tiny_bert_dir: Path) -> None:
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=3)
    words = word_embeddings(classifier.model, "")
    ids = tokens(classifier)["input_ids"]
    classifier.model(**tokens(classifier))
    assert torch.equal(words(ids), nn.functional.embedding(ids, words.weight))


def test_gpt2_forward_grad_and_the_last_real_token(tiny_gpt2_dir: Path) -> None:
    classifier = prompted(tiny_gpt2_dir, num_virtual_tokens=5)
    model = classifier.model
    assert set(trainable_names(model)) == {"prompt_encoder.embedding.weight", "score.weight"}
    inputs = tokens(classifier)
    inputs.pop("token_type_ids")
    loss = model(**inputs).logits.sum()
    loss.backward()
    grad = prompt_encoder(model).embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # Each row of a right-padded batch is classified at its own last real token: the same logits as
    # the text alone, unpadded. (With inputs_embeds, GPT-2 would read the last, padded, column.)
    batched = logits(model, inputs)
    for row, text in enumerate(TEXTS):
        alone = tokens(classifier, [text])
        alone.pop("token_type_ids")
        torch.testing.assert_close(batched[row : row + 1], logits(model, alone), atol=1e-5, rtol=0)


def test_a_copy_of_the_model_keeps_working(tiny_bert_dir: Path) -> None:
    # The KL regulariser and evaluation may deepcopy a model; the hooks must follow the copy's prompt.
    classifier = prompted(tiny_bert_dir, num_virtual_tokens=3)
    inputs = tokens(classifier)
    twin = copy.deepcopy(classifier.model)
    with torch.no_grad():  # not a constant shift: BERT's embedding LayerNorm would remove it
        prompt_encoder(twin).embedding.weight.mul_(-3.0)
    assert not torch.allclose(logits(twin, inputs), logits(classifier.model, inputs), atol=1e-4)
