"""Input adapter (Pfeiffer et al., 2021, UNKs Everywhere, arXiv:2012.15562): e ← e + up(act(down(e))) on
the word embeddings, plus optional new domain tokens whose embedding rows alone train.

The whole pretrained embedding table stays frozen: ids the tokenizer had before use it, ids of the
added tokens use a small trainable (n_new, dim) table beside it. So a job that adds ten tokens to a
30k vocabulary trains ten rows, and the artifact stores ten rows, not a resized matrix.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.errors import SpecError
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.bottleneck import Bottleneck, bottleneck_width
from tuning.methods.input_adapter.options import InputAdapterMethod
from tuning.spec_base import Activation

logger = logging.getLogger(__name__)


class DomainEmbedding(nn.Module):
    """Frozen word embedding + trainable rows for ids from `first_new_id` on, then a residual bottleneck."""

    def __init__(
        self,
        base: nn.Embedding,
        first_new_id: int,
        new_rows: torch.Tensor,
        bottleneck: int,
        activation: Activation,
    ) -> None:
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        self.first_new_id = first_new_id
        # None rather than an empty table when no token is new: nothing to train or to store.
        self.new_embeddings = nn.Parameter(new_rows.clone()) if len(new_rows) else None
        self.encoder = Bottleneck(base.embedding_dim, bottleneck, activation)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.lookup(input_ids))

    def lookup(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings before the encoder: the base table's rows, the new table's for new ids."""
        if self.new_embeddings is None:
            return self.base_layer(input_ids)
        is_new = input_ids >= self.first_new_id
        # New ids may lie past the base table's end: look up a valid row there and replace it.
        old = self.base_layer(input_ids.masked_fill(is_new, 0))
        # An id past the new table raises an IndexError instead of silently reading another row.
        new = self.new_embeddings[(input_ids - self.first_new_id).clamp(min=0)]
        return torch.where(is_new.unsqueeze(-1), new, old)


@dataclass(frozen=True)
class AddedTokens:
    first_id: int  # the id of the first added token; the others follow it
    added: list[str]
    skipped: list[str]  # already a single token of the vocabulary


def apply(model: nn.Module, options: InputAdapterMethod, context: MethodContext) -> Applied:
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    if not isinstance(embedding, nn.Embedding):
        raise SpecError(
            f"input_adapter wraps an nn.Embedding, but this model's input embedding is a "
            f"{type(embedding).__name__}",
            param="method.type",
        )
    tokens = split_tokens(context.tokenizer, options.new_tokens)
    rows = initial_rows(embedding, context.tokenizer, tokens.added)  # before adding: the original split
    add_tokens(context.tokenizer, tokens)
    width = bottleneck_width(embedding.embedding_dim, options.reduction_factor, options.bottleneck_size)
    wrapped = DomainEmbedding(embedding, tokens.first_id, rows, width, options.non_linearity)
    wrapped.encoder.to(device=embedding.weight.device, dtype=embedding.weight.dtype)
    name = _replace(model, embedding, wrapped)
    _widen_vocabulary(model, tokens)
    summary = f"input adapter (bottleneck {width}) on {name}, {len(tokens.added)} new tokens"
    if tokens.skipped:
        summary += f" ({len(tokens.skipped)} already in the vocabulary)"
    details = {
        "embedding_module": name,
        "bottleneck_size": width,
        "non_linearity": options.non_linearity,
        "new_tokens": {token: tokens.first_id + index for index, token in enumerate(tokens.added)},
        "skipped_tokens": tokens.skipped,
    }
    return Applied(summary, details)


def split_tokens(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> AddedTokens:
    """Which tokens to add, and the id the first will get; those read as one known id are skipped."""
    skipped = [token for token in tokens if _single_known_id(tokenizer, token)]
    if skipped:
        logger.info("new_tokens already in the vocabulary, not added: %s", ", ".join(skipped))
    return AddedTokens(len(tokenizer), [token for token in tokens if token not in skipped], skipped)


def initial_rows(
    embedding: nn.Embedding, tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]
) -> torch.Tensor:
    """One row per token: the mean of the embeddings of the sub-tokens `tokenizer` splits it into.

    Called before the tokens are added. The mean starts a new row close to what the model already
    read for that string ("covid19" = "co" "##vid" "##19"), and at the scale of real embeddings,
    so the frozen layers see a familiar input from the first step instead of a random vector.
    """
    table = embedding.weight.detach()
    rows = [table.new_zeros((0, embedding.embedding_dim))]
    for token in tokens:
        pieces = tokenizer(token, add_special_tokens=False)["input_ids"]
        # A token the normaliser erases entirely has no pieces: start it at the table's centre.
        chosen = table[torch.tensor(pieces, device=table.device)] if pieces else table
        rows.append(chosen.mean(dim=0, keepdim=True))
    return torch.cat(rows).clone()


def add_tokens(tokenizer: PreTrainedTokenizerBase, tokens: AddedTokens) -> None:
    """Add `tokens.added`; check each now reads as its own id, the ids following `tokens.first_id`."""
    if tokens.added:
        tokenizer.add_tokens(list(tokens.added))
    for offset, token in enumerate(tokens.added):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        if ids != [tokens.first_id + offset]:
            # E.g. two tokens that differ only in case under a lowercasing tokenizer: one shadows the other.
            raise SpecError(
                f"new token {token!r} does not tokenize as its own id after adding it (got {ids})",
                param="method.new_tokens",
            )


def _single_known_id(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and ids[0] != tokenizer.unk_token_id


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> str:
    """Put `new` where `old` sits in `model`; return that module's qualified name."""
    name = next(name for name, module in model.named_modules() if module is old)
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child_name, new)
    return name


def _widen_vocabulary(model: nn.Module, tokens: AddedTokens) -> None:
    """Keep config.vocab_size the number of ids the model accepts, now counting the added tokens."""
    config = getattr(model, "config", None)
    if config is not None and tokens.added:
        config.vocab_size = max(int(config.vocab_size), tokens.first_id + len(tokens.added))
