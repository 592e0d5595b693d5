"""How much of a text is worth tokenizing when only its first `max_length` tokens are kept.

Tokenizing a 10 MB line to learn that it is longer than 128 tokens took seconds and most of a GB
(every token's id, offsets and string). Training cuts an example at `max_length` tokens, so only a
prefix matters. The rule, stated once for the validation report and the trainer alike:

- a text of at most `CHARS_PER_TOKEN[0] × (max_length + SLACK_TOKENS)` characters is tokenized whole;
- a longer one is tokenized in growing windows of `c × (max_length + SLACK_TOKENS)` characters, c in
  `CHARS_PER_TOKEN` (16, then 64, then 256 characters a token), each window cut at its last whitespace
  so no word is split (the tokens of the window are then the first tokens of the whole text), until a
  window holds more than `max_length` tokens: the text is over-long, and those tokens are its start;
- if even the widest window holds no more than `max_length` tokens (tokens of over 256 characters on
  average: one enormous "word"), the text is taken as over-long all the same (`whole` is false and
  `over` true), and the work stops there.

So no example costs more than `sum(CHARS_PER_TOKEN) × (max_length + SLACK_TOKENS)` characters of
tokenizing, whatever its length. No torch, no tokenizer library: callers pass their tokenize function.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

CHARS_PER_TOKEN = (16, 64, 256)
# Room for special tokens and for a template's or an EOS's extra tokens beyond max_length.
SLACK_TOKENS = 8

Result = TypeVar("Result")


def windows(max_length: int) -> list[int]:
    """The window sizes, in characters, tried in order for a text longer than the first."""
    return [chars * (max_length + SLACK_TOKENS) for chars in CHARS_PER_TOKEN]


def max_chars(max_length: int) -> int:
    """The most characters one example may hand the tokenizer, over all its windows."""
    return sum(windows(max_length))


def cut(text: str, chars: int) -> str:
    """`text`'s first `chars` characters, ending at the last whitespace among them when there is one
    in their second half (a word split in two could tokenize differently from the whole word)."""
    if len(text) <= chars:
        return text
    piece = text[:chars]
    end = max(piece.rfind(" "), piece.rfind("\n"), piece.rfind("\t"))
    return piece[:end] if end >= chars // 2 else piece


@dataclass(frozen=True)
class Prefix:
    """What tokenizing (a prefix of) one text gave."""

    tokens: int  # tokens of what was tokenized
    chars: int  # characters tokenized
    whole: bool  # the whole text was tokenized: `tokens` is its exact count

    def estimated_tokens(self, text_chars: int) -> int:
        """The whole text's tokens, extrapolated from the prefix's characters per token."""
        if self.whole or self.chars == 0:
            return self.tokens
        return max(self.tokens, round(self.tokens * text_chars / self.chars))


def tokenize_prefix(
    tokenize: Callable[[str], Result], count: Callable[[Result], int], text: str, max_length: int
) -> tuple[Result, Prefix]:
    """`tokenize` applied to the shortest window of `text` that shows it over `max_length` tokens (or
    to all of it, when it is short enough), with what was tokenized."""
    for chars in windows(max_length):
        piece = cut(text, chars)
        result = tokenize(piece)
        if len(piece) == len(text):
            return result, Prefix(count(result), len(text), whole=True)
        if count(result) > max_length:
            break
    return result, Prefix(count(result), len(piece), whole=False)


def count_prefixes(
    encode_batch: Callable[[list[str]], Sequence[int]], texts: Sequence[str], max_length: int
) -> list[Prefix]:
    """Token counts of many texts, by `encode_batch` (a parallel tokenizer) over the same windows:
    each round only re-tokenizes the texts the previous window could not settle."""
    found: list[Prefix | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    for chars in windows(max_length):
        pieces = [cut(texts[index], chars) for index in pending]
        counts = encode_batch(pieces)
        still = []
        for index, piece, tokens in zip(pending, pieces, counts, strict=True):
            whole = len(piece) == len(texts[index])
            found[index] = Prefix(tokens, len(piece), whole)
            if not whole and tokens <= max_length:
                still.append(index)  # not settled: a wider window may show it over the limit
        pending = still
        if not pending:
            break
    return [prefix for prefix in found if prefix is not None]
