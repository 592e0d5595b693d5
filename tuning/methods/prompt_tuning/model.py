"""Prompt tuning (Lester et al., 2021, arXiv:2104.08691): h = f([P; E(x)]), P ∈ R^(n×d) trained, f frozen.

The prompt lives in `model.prompt_encoder.embedding.weight` (PEFT's `prompt_embeddings`). A forward
pre-hook prepends n placeholder ids to `input_ids` (and ones to the attention mask, zeros to the
token types) and a forward hook on the word-embedding layer puts P in their place. PEFT instead
feeds `inputs_embeds = [P; E(x)]`; the two are the same tensor after the embedding layer (BERT adds
positions and token types to either), but keeping `input_ids` lets a last-token head (GPT-2's
`score`) still find each row's last real token: with `inputs_embeds` alone it takes the last
column, a pad token in every right-padded row but the longest. The placeholders are pad ids, so
that search skips them.
"""

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tuning.errors import SpecError
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.prompt_tuning.options import PromptTuningMethod
from tuning.methods.virtual_tokens import (
    Kwargs,
    add_child,
    batch_shape,
    extend_mask,
    fit_text,
    named_inputs,
    position_limit,
    word_embeddings,
)

ENCODER = "prompt_encoder"


class PromptEncoder(nn.Module):
    """n trainable virtual-token embeddings and the two hooks that put them in front of the text."""

    def __init__(self, num_virtual_tokens: int, token_dim: int, *, placeholder_id: int, limit: int | None):
        super().__init__()
        self.num_virtual_tokens = num_virtual_tokens
        self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
        self.placeholder_id = placeholder_id
        self.limit = limit
        # Set by the model's pre-hook, consumed by the embedding hook: only the embedding call of a
        # prompted forward pass gets the prompt, never a stray call to the embedding layer.
        self._pending = False

    def prompt(self, batch: int) -> torch.Tensor:
        return self.embedding.weight.unsqueeze(0).expand(batch, -1, -1)

    def before_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: Kwargs
    ) -> tuple[tuple[()], Kwargs]:
        kwargs = named_inputs(args, kwargs)
        n = self.num_virtual_tokens
        fit_text(kwargs, n, self.limit)
        batch, _ = batch_shape(kwargs)
        extend_mask(kwargs, n, batch)
        types = kwargs.get("token_type_ids")
        if types is not None:
            kwargs["token_type_ids"] = torch.cat(
                (torch.zeros_like(types[:, :1]).expand(batch, n), types), dim=1
            )
        if kwargs.get("position_ids") is not None:
            # As PEFT does: the text's positions now start after the prompt; the model numbers them.
            kwargs["position_ids"] = None
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:
            kwargs["inputs_embeds"] = torch.cat((self.prompt(batch).to(embeds.dtype), embeds), dim=1)
        else:
            ids = kwargs["input_ids"]
            placeholders = torch.full((batch, n), self.placeholder_id, dtype=ids.dtype, device=ids.device)
            kwargs["input_ids"] = torch.cat((placeholders, ids), dim=1)
            self._pending = True
        return (), kwargs

    def after_embedding(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if not self._pending:
            return output
        self._pending = False
        prompt = self.prompt(output.shape[0]).to(output.dtype)
        return torch.cat((prompt, output[:, self.num_virtual_tokens :]), dim=1)


def apply(model: nn.Module, options: PromptTuningMethod, context: MethodContext) -> Applied:
    encoder = attach_prompt(model, options, context.tokenizer)
    text = options.init_text or ""
    init = f"the text {text[:40] + ('…' if len(text) > 40 else '')!r}" if options.init == "text" else "random"
    return Applied(
        f"prompt tuning: {options.num_virtual_tokens} virtual tokens, {init} init",
        {
            "num_virtual_tokens": options.num_virtual_tokens,
            "init": options.init,
            "token_dim": encoder.embedding.embedding_dim,
        },
    )


def attach_prompt(
    model: nn.Module, options: PromptTuningMethod, tokenizer: PreTrainedTokenizerBase
) -> PromptEncoder:
    """Add `model.prompt_encoder` and its hooks; only the prompt (and the head) stay trainable."""
    words = word_embeddings(model, "prompt tuning prepends to the word embeddings")
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    encoder = PromptEncoder(
        options.num_virtual_tokens,
        words.embedding_dim,
        placeholder_id=pad if isinstance(pad, int) else int(tokenizer.pad_token_id or 0),
        limit=position_limit(config),
    )
    with torch.no_grad():
        encoder.embedding.weight.copy_(initial_prompt(words, options, tokenizer))
    add_child(model, ENCODER, encoder)
    model.register_forward_pre_hook(encoder.before_forward, with_kwargs=True)
    words.register_forward_hook(encoder.after_embedding)
    return encoder


def initial_prompt(
    words: nn.Embedding, options: PromptTuningMethod, tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    n = options.num_virtual_tokens
    table = words.weight.detach().float()
    if options.init == "text":
        assert options.init_text is not None  # the spec refuses text init without text
        return table[text_init_ids(tokenizer, options.init_text, n)].clone()
    # PEFT draws N(0, 1). Real token embeddings are ~20x smaller (std ≈ 0.05 in BERT and GPT-2), and
    # GPT-2 feeds them into the residual stream without a LayerNorm: N(0, 1) virtual tokens would
    # drown the text. Drawing at the vocabulary's own scale keeps the frozen layers in their range.
    return torch.randn(n, table.shape[1], device=table.device) * table.std()


def text_init_ids(tokenizer: PreTrainedTokenizerBase, text: str, n: int) -> list[int]:
    """PEFT's rule: the text's ids (special tokens included, as the tokenizer adds them), repeated
    to reach n and cut at n."""
    ids: list[int] = tokenizer(text)["input_ids"]
    if not ids:
        raise SpecError("init_text encodes to no tokens", param="method.init_text")
    return (ids * -(-n // len(ids)))[:n]


def prompt_encoder(model: nn.Module) -> PromptEncoder:
    encoder = getattr(model, ENCODER, None)
    if not isinstance(encoder, PromptEncoder):
        raise SpecError("the model has no prompt encoder: prompt tuning was not applied", param="method.type")
    return encoder
