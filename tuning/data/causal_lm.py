"""Language-model examples as token sequences with their loss labels, without torch or transformers.

A causal LM learns every token of a `text` line, only the completion of a `prompt_completion` line,
and only the assistant turns of a `chat` line. Each example becomes one string plus the character
spans that carry a loss; the tokenizer's offsets then say which tokens fall in those spans. The API
(validation reports, with a `tokenizers.Tokenizer`) and the trainer (with a transformers tokenizer)
share this code through the `tokenize(text) -> (ids, offsets)` function they pass in.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tuning.data import ChatExample, PromptCompletionExample, TextExample
from tuning.data.prefix import tokenize_prefix
from tuning.errors import DataError, SpecError

IGNORE_INDEX = -100  # same as tuning.batching.IGNORE_INDEX (kept here so this module needs no torch)

Offsets = list[tuple[int, int]]
Tokenize = Callable[[str], tuple[list[int], Offsets]]
LmExample = TextExample | PromptCompletionExample | ChatExample
Span = tuple[int, int]


@dataclass(frozen=True)
class LmSequence:
    """Token ids and, per token, the id it must be predicted as, or IGNORE_INDEX (no loss there)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def labelled(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(frozen=True)
class Specials:
    """The tokenizer's special tokens, as ids (for sequences) and strings (for chat templates)."""

    eos_id: int
    bos_id: int | None = None  # put in front of text and prompt_completion examples when set
    eos_token: str = ""
    bos_token: str = ""


def end_of_text_id(candidates: Iterable[object]) -> int | None:
    """The first candidate that names an end-of-text id: an int, or a list's first (configs may list
    several). Callers pass the tokenizer's EOS, the model config's, then the tokenizer's SEP."""
    for candidate in candidates:
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
        if isinstance(candidate, list) and candidate and isinstance(candidate[0], int):
            return candidate[0]
    return None


def opening_id(bos_id: int | None, eos_id: int) -> int | None:
    """The id put in front of a text: BOS, unless it is EOS (GPT-2 was trained without an opener)."""
    return bos_id if bos_id is not None and bos_id != eos_id else None


def encode_lm_examples(
    tokenize: Tokenize,
    examples: Sequence[LmExample],
    *,
    max_length: int,
    specials: Specials,
    chat_template: str | None = None,
    packing: bool = False,
) -> list[LmSequence]:
    """One sequence per example (truncated to max_length), or with `packing` the examples' tokens
    joined end to end and cut into sequences of max_length, so no position is spent on padding.

    Without packing only a bounded prefix of a long text is tokenized (tuning.data.prefix): the
    tokens past max_length would be cut anyway. Packing keeps every token, so it tokenizes all."""
    if not packing:
        tokenize = bounded(tokenize, max_length)
    sequences = [_encode_one(tokenize, example, specials, chat_template) for example in examples]
    if packing:
        return pack(sequences, max_length)
    return [LmSequence(s.input_ids[:max_length], s.labels[:max_length]) for s in sequences]


def bounded(tokenize: Tokenize, max_length: int) -> Tokenize:
    """`tokenize` on the prefix of a text that already holds more than max_length tokens."""

    def tokenize_start(text: str) -> tuple[list[int], Offsets]:
        return tokenize_prefix(tokenize, lambda found: len(found[0]), text, max_length)[0]

    return tokenize_start


def pack(sequences: Sequence[LmSequence], max_length: int) -> list[LmSequence]:
    """Concatenate (each already ends in EOS) and cut every max_length tokens; labels move with ids."""
    ids = [token for sequence in sequences for token in sequence.input_ids]
    labels = [label for sequence in sequences for label in sequence.labels]
    return [
        LmSequence(ids[start : start + max_length], labels[start : start + max_length])
        for start in range(0, len(ids), max_length)
    ]


def labels_from_offsets(ids: Sequence[int], offsets: Offsets, spans: Sequence[Span]) -> list[int]:
    """A token is labelled (with its own id) when its characters overlap a span; others get -100."""
    return [
        token if start < end and any(start < stop and begin < end for begin, stop in spans) else IGNORE_INDEX
        for token, (start, end) in zip(ids, offsets, strict=True)
    ]


def render_chat(
    template: str,
    messages: Sequence[dict[str, str]],
    *,
    specials: Specials,
    add_generation_prompt: bool = False,
) -> str:
    """The chat as the model sees it, rendered the way transformers' apply_chat_template renders it."""
    return _compiled(template).render(
        messages=list(messages),
        bos_token=specials.bos_token,
        eos_token=specials.eos_token,
        add_generation_prompt=add_generation_prompt,
    )


def chat_text_and_spans(
    template: str, example: ChatExample, specials: Specials, *, param: str = "training_file"
) -> tuple[str, list[Span]]:
    """The rendered chat and the character span of each assistant turn.

    A turn's span runs from the end of the conversation before it (rendered with the generation
    prompt, so the "assistant:" header is not learnt) to the end of the conversation including it
    (so its end-of-turn marker is learnt: that is how the model learns to stop).
    """
    messages = [{"role": m.role, "content": m.content} for m in example.messages]
    full = render_chat(template, messages, specials=specials)
    spans: list[Span] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(template, messages[:index], specials=specials, add_generation_prompt=True)
        through = render_chat(template, messages[: index + 1], specials=specials)
        if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
            raise DataError(
                "the chat template renders a conversation differently from its beginning, so the "
                "assistant turns cannot be found",
                line=example.line,
                param=param,
            )
        spans.append((len(before), len(through)))
    if not spans:
        raise DataError("a chat example needs at least one assistant message", line=example.line, param=param)
    return full, spans


def _encode_one(
    tokenize: Tokenize, example: LmExample, specials: Specials, chat_template: str | None
) -> LmSequence:
    if isinstance(example, ChatExample):
        if not chat_template:
            raise SpecError(
                "chat data needs a chat template: the tokenizer has none, so set data.chat_template",
                param="data.chat_template",
            )
        # The template writes the special tokens itself (BOS, end-of-turn): nothing is added around it.
        text, spans = chat_text_and_spans(chat_template, example, specials)
        ids, offsets = tokenize(text)
        return LmSequence(ids, labels_from_offsets(ids, offsets, spans))
    if isinstance(example, PromptCompletionExample):
        text, spans = example.prompt + example.completion, [(len(example.prompt), -1)]
    else:
        text, spans = example.text, [(0, -1)]
    spans = [(start, len(text)) for start, _ in spans]
    ids, offsets = tokenize(text)
    labels = labels_from_offsets(ids, offsets, spans)
    # EOS closes what is learnt, so the tuned model learns where a text (or a completion) ends.
    ids, labels = ids + [specials.eos_id], labels + [specials.eos_id]
    if specials.bos_id is not None:
        ids, labels = [specials.bos_id] + ids, [IGNORE_INDEX] + labels
    return LmSequence(ids, labels)


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    # As transformers does: a sandbox (templates come from users), trim/lstrip blocks, raise_exception.
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise SpecError(f"the chat template refused the conversation: {message}", param="data.chat_template")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template)
