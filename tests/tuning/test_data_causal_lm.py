"""Token labels of language-model examples, computed with the MiniLM `tokenizers.Tokenizer` (no torch)."""

import pytest
from tokenizers import Tokenizer

from tests.tiny_models import minilm_path
from tuning.data import ChatExample, Message, PromptCompletionExample, TextExample
from tuning.data.causal_lm import IGNORE_INDEX, Specials, chat_text_and_spans, encode_lm_examples
from tuning.errors import SpecError

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} {{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = Specials(eos_id=102, eos_token="[SEP]")


@pytest.fixture(scope="module")
def tokenize():
    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    # MiniLM's tokenizer.json pads and truncates to 128: tuning.data.causal_lm does its own truncation.
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def run(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    return run


def test_text_learns_every_token_and_the_end(tokenize) -> None:
    [sequence] = encode_lm_examples(
        tokenize, [TextExample("the cat sleeps", 1)], max_length=32, specials=SPECIALS
    )
    ids, _ = tokenize("the cat sleeps")
    assert sequence.input_ids == ids + [102]
    assert sequence.labels == ids + [102]


def test_prompt_tokens_carry_no_loss(tokenize) -> None:
    example = PromptCompletionExample("translate to french: dog =", " chien", 1)
    [sequence] = encode_lm_examples(tokenize, [example], max_length=32, specials=SPECIALS)
    prompt_ids, _ = tokenize("translate to french: dog =")
    completion_ids, _ = tokenize(" chien")
    assert sequence.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert sequence.labels[len(prompt_ids) :] == completion_ids + [102]


def test_chat_learns_only_assistant_turns(tokenize) -> None:
    example = ChatExample(
        (
            Message("system", "be brief"),
            Message("user", "name a pet"),
            Message("assistant", "a cat"),
            Message("user", "another"),
            Message("assistant", "a dog"),
        ),
        1,
    )
    text, spans = chat_text_and_spans(CHAT_TEMPLATE, example, SPECIALS)
    assert [text[start:end] for start, end in spans] == ["a cat [SEP]\n", "a dog [SEP]\n"]
    [sequence] = encode_lm_examples(
        tokenize, [example], max_length=128, specials=SPECIALS, chat_template=CHAT_TEMPLATE
    )
    learnt = [
        token
        for token, label in zip(sequence.input_ids, sequence.labels, strict=True)
        if label != IGNORE_INDEX
    ]
    assert learnt == tokenize("a cat [SEP]")[0] + tokenize("a dog [SEP]")[0]
    # The user's and system's words, and the role headers, are all in the input but never learnt.
    assert len(sequence.input_ids) > 2 * len(learnt)


def test_chat_without_a_template_names_the_setting(tokenize) -> None:
    example = ChatExample((Message("user", "hi"), Message("assistant", "hello")), 1)
    with pytest.raises(SpecError) as refused:
        encode_lm_examples(tokenize, [example], max_length=32, specials=SPECIALS)
    assert refused.value.param == "data.chat_template"
    assert "data.chat_template" in str(refused.value)


def test_truncation_keeps_the_beginning(tokenize) -> None:
    [sequence] = encode_lm_examples(
        tokenize, [TextExample("one two three four five six", 1)], max_length=3, specials=SPECIALS
    )
    assert sequence.input_ids == tokenize("one two three")[0]


def test_packing_fills_sequences_and_loses_no_labelled_token(tokenize) -> None:
    examples = [
        PromptCompletionExample(f"question number {n} :", f" answer {n} is here", n) for n in range(1, 30)
    ]
    separate = encode_lm_examples(tokenize, examples, max_length=1000, specials=SPECIALS)
    packed = encode_lm_examples(tokenize, examples, max_length=16, specials=SPECIALS, packing=True)
    assert all(len(sequence.input_ids) == 16 for sequence in packed[:-1])
    assert 0 < len(packed[-1].input_ids) <= 16
    assert [t for s in packed for t in s.input_ids] == [t for s in separate for t in s.input_ids]
    assert [t for s in packed for t in s.labels] == [t for s in separate for t in s.labels]
    assert sum(s.labelled for s in packed) == sum(s.labelled for s in separate) > 29 * 4
    assert sum(s.input_ids.count(102) for s in packed) == 29  # one EOS closes each example


def test_a_long_text_is_tokenized_only_as_far_as_training_keeps_it(tokenize) -> None:
    from tuning.data.prefix import max_chars

    handed: list[int] = []

    def counting(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        handed.append(len(text))
        return tokenize(text)

    text = "the cat sleeps on a warm mat, dreaming of fish " * 20_000  # about 1 MB
    examples = [TextExample(text, 1), PromptCompletionExample("tell me:", text, 2)]
    bounded = encode_lm_examples(counting, examples, max_length=64, specials=SPECIALS)
    assert max(handed) <= max_chars(64)
    # The same sequences as tokenizing everything and truncating: the prefix is cut between words.
    whole = [
        tokenize(example.text if isinstance(example, TextExample) else "tell me:" + text)
        for example in examples
    ]
    for sequence, (ids, _) in zip(bounded, whole, strict=True):
        assert sequence.input_ids == ids[:64]
    assert bounded[0].labels == whole[0][0][:64]
    # Packing keeps every token, so there the whole text is tokenized.
    handed.clear()
    encode_lm_examples(counting, examples[:1], max_length=64, specials=SPECIALS, packing=True)
    assert handed == [len(text)]
