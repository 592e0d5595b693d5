"""Prefix tuning (Li & Liang, 2021, arXiv:2101.00190): every layer attends over [P_k; K] and [P_v; V],
the prefixes P trained, the model frozen.

The prefixes travel to the attention layers as a pre-filled key/value cache, as PEFT passes them:
a forward pre-hook builds a fresh `DynamicCache` holding, per layer, the prefix keys and values
(batch, kv heads, n, head dim), passes it under the name the model's forward takes (`cache` in
transformers 5, `past_key_values` before), and puts n ones in front of the attention mask. The text's
positions then start at n, in BERT and GPT-2 alike, exactly as under PEFT.

The trained tensor is `model.prefix_encoder.embedding.weight`, shape (n, layers·2·kv width), laid out
as PEFT's `prompt_embeddings`: for virtual token t, [layer 0 key, layer 0 value, layer 1 key, ...].
With `projection` the prefix is instead MLP(embedding) (PEFT's `prefix_projection`: Linear, Tanh,
Linear), a reparameterisation that steadies training; `drop_projection` freezes its output into a
plain table for export.
"""

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from tuning.errors import SpecError
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.prefix_tuning.options import PrefixTuningMethod
from tuning.methods.virtual_tokens import (
    Kwargs,
    add_child,
    batch_shape,
    extend_mask,
    fit_text,
    hidden_width,
    named_inputs,
    position_limit,
    word_embeddings,
)

ENCODER = "prefix_encoder"
CACHE_NAMES = ("cache", "past_key_values")  # transformers 5 renamed past_key_values to cache


@dataclass(frozen=True)
class Geometry:
    """The attention shape a prefix must match: PEFT's num_layers, num_attention_heads, token_dim."""

    layers: int
    heads: int  # key/value heads (fewer than query heads under grouped-query attention)
    head_dim: int

    @property
    def token_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def width(self) -> int:
        """One virtual token's prefix across the model: a key and a value per layer."""
        return self.layers * 2 * self.token_dim


class PrefixEncoder(nn.Module):
    """The prefix table (or its reparameterisation) and the hook that hands it to every layer."""

    def __init__(
        self,
        num_virtual_tokens: int,
        geometry: Geometry,
        *,
        cache_name: str,
        limit: int | None,
        projection_width: int | None = None,
    ):
        super().__init__()
        self.num_virtual_tokens = num_virtual_tokens
        self.geometry = geometry
        self.cache_name = cache_name
        self.limit = limit
        self.transform: nn.Sequential | None = None
        if projection_width is None:
            self.embedding = nn.Embedding(num_virtual_tokens, geometry.width)
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, geometry.token_dim)
            self.transform = nn.Sequential(
                nn.Linear(geometry.token_dim, projection_width),
                nn.Tanh(),
                nn.Linear(projection_width, geometry.width),
            )

    def prefix(self) -> torch.Tensor:
        """(n, layers·2·token_dim): what PEFT stores as `prompt_embeddings`."""
        if self.transform is None:
            return self.embedding.weight
        return self.transform(self.embedding.weight)

    @torch.no_grad()
    def drop_projection(self) -> None:
        """Replace the MLP by the table it currently computes: same forward, PEFT's inference layout."""
        if self.transform is None:
            return
        table = self.prefix().detach().clone()
        rows, width = table.shape
        self.embedding = nn.Embedding(rows, width, device=table.device, dtype=table.dtype)
        self.embedding.weight.copy_(table)
        self.transform = None

    def cache(self, batch: int) -> DynamicCache:
        """A fresh cache per call: the attention layers append the text's keys and values to it."""
        g, n = self.geometry, self.num_virtual_tokens
        # (n, L·2, H, hd) → L·2 tensors (H, n, hd): PEFT's view and permute, without its batch axis.
        # Unbound rather than indexed: the backward of L·2 indexings would each zero-fill a tensor
        # of all the layers' size; unbind's stacks the gradients once.
        keys_values = self.prefix().view(n, g.layers * 2, g.heads, g.head_dim).permute(1, 2, 0, 3).unbind()
        # Expanded last, per layer: a view, so every row of the batch shares the prefix's storage.
        per_layer = [tensor.unsqueeze(0).expand(batch, -1, -1, -1) for tensor in keys_values]
        return DynamicCache([(per_layer[2 * i], per_layer[2 * i + 1]) for i in range(g.layers)])

    def before_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: Kwargs
    ) -> tuple[tuple[()], Kwargs]:
        kwargs = named_inputs(args, kwargs)
        if any(kwargs.get(name) is not None for name in CACHE_NAMES):
            raise ValueError("a prefix-tuned model builds its own key/value cache; do not pass one")
        n = self.num_virtual_tokens
        fit_text(kwargs, n, self.limit)
        batch, _ = batch_shape(kwargs)
        extend_mask(kwargs, n, batch)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + n  # PEFT's offset: the text follows the prefix
        kwargs[self.cache_name] = self.cache(batch)
        return (), kwargs


def apply(model: nn.Module, options: PrefixTuningMethod, context: MethodContext) -> Applied:
    encoder = attach_prefix(model, options)
    g = encoder.geometry
    shape = f"{g.layers} layers × {g.heads} heads × {g.head_dim}"
    projection = (
        f", through a {options.encoder_hidden_size or g.token_dim}-wide MLP" if options.projection else ""
    )
    return Applied(
        f"prefix tuning: {options.num_virtual_tokens} virtual keys and values at {shape}{projection}",
        {
            "num_virtual_tokens": options.num_virtual_tokens,
            "num_layers": g.layers,
            "num_attention_heads": g.heads,
            "token_dim": g.token_dim,
            "projection": options.projection,
        },
    )


def attach_prefix(model: nn.Module, options: PrefixTuningMethod) -> PrefixEncoder:
    """Add `model.prefix_encoder` and its hook; only the prefix (and the head) stay trainable."""
    config = getattr(model, "config", None)
    geometry = attention_geometry(config)
    cache_name = cache_argument(model)
    width = (options.encoder_hidden_size or geometry.token_dim) if options.projection else None
    encoder = PrefixEncoder(
        options.num_virtual_tokens,
        geometry,
        cache_name=cache_name,
        limit=position_limit(config),
        projection_width=width,
    )
    if width is None:
        # Li & Liang §7.2: a prefix started from real words' activations trains better than a random
        # one. The reparameterised prefix keeps nn's default init: its MLP has no table to copy into.
        ids = random_token_ids(model, options.num_virtual_tokens)
        with torch.no_grad():
            encoder.embedding.weight.copy_(real_token_prefix(model, geometry, ids, cache_name))
    add_child(model, ENCODER, encoder)
    model.register_forward_pre_hook(encoder.before_forward, with_kwargs=True)
    return encoder


def attention_geometry(config: Any) -> Geometry:
    """Layers, key/value heads and head width from the config, with PEFT's grouped-query rule."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise SpecError(
            "prefix tuning needs the model's attention layers and heads in its config", param="method.type"
        )
    head_dim = getattr(config, "head_dim", None)
    if not isinstance(head_dim, int):
        head_dim = hidden_width(config) // heads
    kv_heads = getattr(config, "num_key_value_heads", None)
    return Geometry(layers, kv_heads if isinstance(kv_heads, int) else heads, head_dim)


def cache_argument(model: nn.Module) -> str:
    """The keyword that carries a key/value cache into this model; SpecError when it takes none.

    Sequence classifiers often take only **kwargs and hand them on to the backbone, whose own
    signature then decides (BERT's in transformers 5).
    """
    top = inspect.signature(type(model).forward).parameters
    named = [name for name in CACHE_NAMES if name in top]
    if named:
        return named[0]
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in top.values())
    backbone = getattr(model, "base_model", None)
    if passes_on and isinstance(backbone, nn.Module) and backbone is not model:
        inner = inspect.signature(type(backbone).forward).parameters
        named = [name for name in CACHE_NAMES if name in inner]
        if named:
            return named[0]
    raise SpecError(
        f"prefix tuning passes its prefixes as a key/value cache, but {type(model).__name__} "
        "takes no cache argument; use prompt_tuning, adapter or lora for this model",
        param="method.type",
    )


def random_token_ids(model: nn.Module, n: int) -> torch.Tensor:
    """(1, n) ids drawn from the vocabulary, on the model's device."""
    words = word_embeddings(model, "prefix tuning starts from real tokens")
    return torch.randint(0, words.num_embeddings, (1, n), device=words.weight.device)


@torch.no_grad()
def real_token_prefix(
    model: nn.Module, geometry: Geometry, ids: torch.Tensor, cache_name: str
) -> torch.Tensor:
    """The keys and values the frozen model computes for the (1, n) tokens `ids`, in PEFT's layout.

    In a causal decoder this prefix makes the model see exactly `ids` in front of the text.
    """
    backbone = getattr(model, "base_model", model)
    n = ids.shape[1]
    cache = DynamicCache()
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(input_ids=ids, **{cache_name: cache})
    finally:
        backbone.train(was_training)
    # [k0, v0, k1, v1, ...], each (1, H, n, hd): every layer must have filled its slot
    filled: list[torch.Tensor] = [
        getattr(layer, kind) for layer in cache.layers for kind in ("keys", "values")
    ]
    if len(filled) != 2 * geometry.layers:
        raise SpecError(
            f"prefix tuning: the model filled the key/value cache of {len(filled) // 2} of "
            f"{geometry.layers} layers",
            param="method.type",
        )
    # (L·2, H, n, hd) → (n, L·2·H·hd)
    stacked = torch.stack([tensor[0] for tensor in filled])
    return stacked.permute(2, 0, 1, 3).reshape(n, geometry.width)


def prefix_encoder(model: nn.Module) -> PrefixEncoder:
    encoder = getattr(model, ENCODER, None)
    if not isinstance(encoder, PrefixEncoder):
        raise SpecError("the model has no prefix encoder: prefix tuning was not applied", param="method.type")
    return encoder
