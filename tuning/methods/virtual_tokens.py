"""What prompt tuning and prefix tuning share: virtual tokens in front of the text, and the hook
plumbing that puts them there without changing how the training loop calls the model.

Both methods keep the model a plain HF classifier called as `model(input_ids=..., attention_mask=...)`:
a forward pre-hook (with kwargs) rewrites the call, the way PEFT's `PeftModelForSequenceClassification`
rewrites it, so the same trained tensors give the same logits in PEFT.
"""

import logging
from typing import Any

import torch
from torch import nn

from tuning.errors import SpecError

logger = logging.getLogger(__name__)

Kwargs = dict[str, Any]


def named_inputs(args: tuple[Any, ...], kwargs: Kwargs) -> Kwargs:
    """The call's inputs as keywords: `model(ids)` is `model(input_ids=ids)` for every HF classifier."""
    if len(args) > 1:
        raise TypeError(
            "a prompt-learning model takes its inputs as keywords (input_ids, attention_mask, ...)"
        )
    kwargs = dict(kwargs)
    if args:
        kwargs["input_ids"] = args[0]
    return kwargs


def batch_shape(kwargs: Kwargs) -> tuple[int, int]:
    """(batch, text length) of a call, from input_ids or inputs_embeds."""
    tokens = kwargs.get("input_ids")
    if tokens is None:
        tokens = kwargs.get("inputs_embeds")
    if tokens is None:
        raise ValueError("the model was called with neither input_ids nor inputs_embeds")
    return int(tokens.shape[0]), int(tokens.shape[1])


def position_limit(config: Any) -> int | None:
    """How many positions the model's position table holds (None: no absolute positions)."""
    for key in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, key, None)
        if isinstance(limit, int):
            return limit
    return None


def fit_text(kwargs: Kwargs, virtual: int, limit: int | None) -> None:
    """Cut the text so that virtual tokens + text fit the position table.

    The data is encoded to the model's full length before any method is known, so a long text plus
    the virtual tokens can overflow the positions (an index error deep in the embeddings). Batches
    are right-padded, so keeping the first `limit - virtual` columns keeps each text's beginning, as
    the tokenizer's own truncation does.
    """
    if limit is None:
        return
    room = limit - virtual
    for key in ("input_ids", "inputs_embeds", "attention_mask", "token_type_ids", "position_ids"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.shape[1] > room:
            logger.debug("%s cut from %d to %d columns to fit %d positions", key, value.shape[1], room, limit)
            kwargs[key] = value[:, :room]


def extend_mask(kwargs: Kwargs, virtual: int, batch: int) -> None:
    """The virtual tokens are always attended to: ones in front of the attention mask (PEFT's rule)."""
    mask = kwargs.get("attention_mask")
    if mask is not None:
        ones = torch.ones(batch, virtual, dtype=mask.dtype, device=mask.device)
        kwargs["attention_mask"] = torch.cat((ones, mask), dim=1)


def hidden_width(config: Any) -> int:
    for key in ("hidden_size", "n_embd", "d_model"):
        width = getattr(config, key, None)
        if isinstance(width, int):
            return width
    raise SpecError("the base model's config names no hidden size", param="method.type")


def word_embeddings(model: nn.Module, why: str) -> nn.Embedding:
    """The model's word-embedding table; SpecError (saying `why` it is needed) when it has none."""
    get = getattr(model, "get_input_embeddings", None)
    words = get() if callable(get) else None
    if not isinstance(words, nn.Embedding):
        raise SpecError(f"{why}, but this model exposes no word-embedding table", param="method.type")
    return words


def add_child(model: nn.Module, name: str, module: nn.Module) -> None:
    """Register the method's module at the model's top level (LayerMap counts it as depth 0)."""
    if hasattr(model, name):
        raise SpecError(f"the model already has a '{name}': a prompt-learning method was applied twice")
    weight = next((p for p in model.parameters()), None)
    if weight is not None:
        module.to(device=weight.device)
    model.add_module(name, module)
