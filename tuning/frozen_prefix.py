"""Frozen-prefix reuse: the layers below the lowest trainable one run once per example, not every step.

A job that trains only the top of a model (partial's last N layers, a linear probe, LoRA on the top
layers, gradual unfreezing's first stages) leaves everything below its lowest trainable layer frozen:
the embeddings and layers 0..k-1. Run without dropout (in eval mode), that frozen part is a fixed
function of each example's tokens, so its output, the hidden states entering layer k, can be computed
once and reused by every epoch and every evaluation: the training is then the one that recomputes it
each step, float rounding apart. With dropout on (what freezing with requires_grad_(False) leaves in
plain PyTorch) it is not: every step draws new masks in the frozen layers too.

`hyperparameters.frozen_layers` says how the frozen part runs:

    reuse      without dropout; its outputs computed once per example (in length-sorted batches, before
               the first step and again when gradual unfreezing moves the boundary) and reused. Above
               `frozen_outputs_max_mb`, or for a model it cannot cut, it recomputes instead (same training).
    recompute  without dropout, computed again every step: the same training as reuse, the exact baseline.
    dropout    as in training, dropout on, every step: what jobs did before this setting existed.
    auto       reuse where it pays: a sequence classifier with at least one frozen transformer layer, no
               kl regularizer (it runs the reference on the tokens), a model it can cut, and each
               boundary lasting 2 epochs or more (one epoch would compute the frozen part once either
               way); else dropout. The job's events say which and why.

How: the model class's own forward runs with its layer stack cut. Caching runs the backbone with
layers[:k] only: its last hidden state is the boundary. Training and evaluation then run it with the
embeddings module standing in for the cached states and layers[k:] only, so everything above the stack
(the pooler, the model class's dropout, the head) is the model's own code. Cut models are BERT-style
encoders: one embeddings module before the stack and a backbone that takes `inputs_embeds` (BERT,
RoBERTa, DistilBERT, MiniLM); each cache build first checks, on one batch, that the cut forward gives
the full forward's logits, and recomputes instead if it does not.
"""

import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from tuning.auto import trained_with
from tuning.batching import Encoded, collate, steps_per_epoch, to_device
from tuning.device import autocast
from tuning.events import Event, EventSink
from tuning.layers import LayerMap
from tuning.spec import JobSpec

logger = logging.getLogger(__name__)

Mode = Literal["reuse", "recompute"]
PARITY_TOLERANCE = 1e-4  # the cut forward's logits against the full one's, relative: float32 reordering
MIN_EPOCHS_TO_PAY = 2  # below it the frozen part runs once per example with or without a cache


class ModelCut:
    """A model's frozen part (embeddings, then layers[:k]) and, for encoders, the forward cut at layer k."""

    def __init__(self, model: nn.Module, layers: LayerMap) -> None:
        self.model, self.count = model, layers.count
        self.before = [model.get_submodule(name) for name in layers.before]
        owner, _, attribute = layers.stack.rpartition(".")
        self.stack_owner, self.stack_attribute = model.get_submodule(owner), attribute
        self.stack: nn.ModuleList = getattr(self.stack_owner, attribute)
        backbone = layers.stack.split(".")[0] if "." in layers.stack else ""
        self.backbone = model.get_submodule(backbone)
        self.refusal = _cut_refusal(model, layers, backbone)
        owner, _, self.embeddings_attribute = (
            layers.before[0].rpartition(".") if layers.before else ("", "", "")
        )
        self.embeddings_owner = model.get_submodule(owner)

    def frozen_modules(self, boundary: int | None) -> list[nn.Module]:
        """What runs below layer `boundary`: the embeddings and layers[:boundary]; None: nothing is frozen."""
        return [] if boundary is None else [*self.before, *self.stack[:boundary]]

    @contextmanager
    def running(self, first: int, last: int, embeddings: nn.Module | None = None) -> Iterator[None]:
        """The model's forward with layers[first:last] only and, given, `embeddings` for its own."""
        assert self.refusal is None, self.refusal
        owner, attribute = self.embeddings_owner, self.embeddings_attribute
        own_embeddings = getattr(owner, attribute)
        setattr(self.stack_owner, self.stack_attribute, self.stack[first:last])
        if embeddings is not None:
            setattr(owner, attribute, embeddings)
        try:
            yield
        finally:
            setattr(self.stack_owner, self.stack_attribute, self.stack)
            setattr(owner, attribute, own_embeddings)

    def boundary_states(self, batch: dict[str, torch.Tensor], boundary: int) -> torch.Tensor:
        """The hidden states entering layer `boundary` (after the last layer when it is the count)."""
        with self.running(0, boundary):
            output = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return output.last_hidden_state  # type: ignore[no-any-return]


def _cut_refusal(model: nn.Module, layers: LayerMap, backbone: str) -> str | None:
    """Why the forward cannot be cut at a layer (None: it can)."""
    name = type(model).__name__
    if len(layers.before) != 1 or not backbone:
        return f"{name} does not run one embeddings module before its layers ({', '.join(layers.before)})"
    takes_embeddings = [
        "inputs_embeds" in inspect.signature(module.forward).parameters
        for module in (model, model.get_submodule(backbone))
    ]
    if not all(takes_embeddings):
        return f"{name} does not take inputs_embeds"
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return f"{name} is a decoder"
    return None


class GivenStates(nn.Module):
    """Stands in for the embeddings while the model runs from cached states: returns them as they are."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.states = states

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.states


class FrozenPartModel(nn.Module):
    """The job's model as the training loop runs it: the frozen part without dropout, and skipped for
    its cached outputs when a batch carries them (`frozen_outputs` in place of `input_ids`)."""

    def __init__(self, model: nn.Module, cut: ModelCut) -> None:
        super().__init__()
        self.model, self.cut = model, cut
        self.boundary: int | None = None  # the lowest trainable layer; None: nothing below it is frozen

    def forward(self, **inputs: Any) -> Any:
        states = inputs.pop("frozen_outputs", None)
        if states is None:
            return self.model(**inputs)
        assert self.boundary is not None
        with self.cut.running(self.boundary, self.cut.count, embeddings=GivenStates(states)):
            return self.model(inputs_embeds=states, **inputs)

    def train(self, mode: bool = True) -> "FrozenPartModel":
        super().train(mode)
        for module in self.cut.frozen_modules(self.boundary):
            module.train(False)  # in training too: a frozen part without dropout is what makes reuse exact
        return self


class CachedOutputs:
    """One dataset's frozen-part outputs: an [its length, hidden] tensor per example, on the device."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def padded(self, indices: Sequence[int]) -> torch.Tensor | None:
        if not self.states:
            return None
        return pad_sequence([self.states[i] for i in indices], batch_first=True)

    @property
    def bytes(self) -> int:
        return sum(states.numel() * states.element_size() for states in self.states)


class FrozenPrefix:
    """A job's frozen part: the model and data the loop trains on, and `follow`, called when the
    trainable set changes (the start, a resume, a gradual-unfreezing stage)."""

    def __init__(
        self,
        mode: Mode,
        cut: ModelCut,
        layers: LayerMap,
        train_set: Encoded,
        validation_set: Encoded | None,
        *,
        batch_size: int,
        device: torch.device,
        bf16: bool,
        max_bytes: int,
        on_event: EventSink,
        why: str = "",
    ) -> None:
        self.mode, self.cut, self.layers, self.why = mode, cut, layers, why
        self.plain_train, self.plain_validation = train_set, validation_set
        self.batch_size, self.device, self.bf16 = batch_size, device, bf16
        self.max_bytes, self.on_event = max_bytes, on_event
        self.model = FrozenPartModel(cut.model, cut)
        self.train_outputs, self.validation_outputs = CachedOutputs(), CachedOutputs()
        self.train_set = replace(train_set, frozen_outputs=self.train_outputs)
        self.validation_set = (
            replace(validation_set, frozen_outputs=self.validation_outputs) if validation_set else None
        )
        self.followed = False

    def follow(self) -> None:
        """Put the boundary under the lowest trainable layer: the part below runs without dropout and,
        with reuse, its outputs are computed there once (again only when the boundary moves)."""
        boundary = lowest_trainable_layer(self.cut.model, self.layers)
        if self.followed and boundary == self.model.boundary:
            return
        self.followed = True
        self.model.boundary = boundary
        self.model.train(self.model.training)  # the new frozen part in eval mode
        self.train_outputs.states, self.validation_outputs.states = [], []
        if boundary is None:
            return
        if self.mode == "reuse" and boundary == 0:
            self.on_event(self._event("recompute", boundary, "; the embeddings alone are not worth caching"))
        elif self.mode == "reuse":
            self._cache(boundary)
        else:
            self.on_event(self._event("recompute", boundary, self.why))

    def _cache(self, boundary: int) -> None:
        started = time.perf_counter()
        sets = [self.plain_train] + ([self.plain_validation] if self.plain_validation else [])
        tokens = sum(len(ids) for encoded in sets for ids in encoded.input_ids)
        hidden = int(getattr(self.cut.model.config, "hidden_size", 0))
        needed = tokens * hidden * 4  # float32: the layers end in a LayerNorm, float32 under autocast too
        if needed > self.max_bytes:
            self._fall_back(
                boundary,
                f"their outputs would take {needed / 2**20:,.0f} MB, over "
                f"hyperparameters.frozen_outputs_max_mb ({self.max_bytes / 2**20:,.0f} MB)",
            )
            return
        difference = self._cut_difference(boundary)
        if difference > PARITY_TOLERANCE:
            self._fall_back(boundary, f"the cut forward's logits are {difference:.1g} off the full one's")
            return
        self.train_outputs.states = self._outputs(self.plain_train, boundary, bf16=self.bf16)
        if self.plain_validation is not None:  # evaluations run in float32
            self.validation_outputs.states = self._outputs(self.plain_validation, boundary, bf16=False)
        cached = self.train_outputs.bytes + self.validation_outputs.bytes
        examples = len(self.train_outputs.states) + len(self.validation_outputs.states)
        seconds = time.perf_counter() - started
        details = {"cached_examples": examples, "cache_bytes": cached, "cache_seconds": round(seconds, 3)}
        size = f" ({examples} examples, {cached / 2**20:,.1f} MB, {seconds:.1f} s)"
        self.on_event(self._event("reuse", boundary, size, details))

    def _fall_back(self, boundary: int, why: str) -> None:
        """Recompute from now on: the same training (the frozen part still runs without dropout), slower."""
        logger.info("frozen-prefix reuse off: %s", why)
        self.mode, self.why = "recompute", f"; not reused: {why}"
        self.train_outputs.states, self.validation_outputs.states = [], []
        self.on_event(self._event("recompute", boundary, self.why))

    @torch.no_grad()
    def _outputs(self, encoded: Encoded, boundary: int, *, bf16: bool) -> list[torch.Tensor]:
        """Each example's hidden states entering layer `boundary`, in eval mode, in length-sorted batches."""
        model = self.cut.model
        was_training = model.training
        model.eval()
        states: list[torch.Tensor | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded.input_ids[i]))
        try:
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                batch = to_device(collate(encoded, chosen), self.device)
                with autocast(self.device, bf16):
                    hidden = self.cut.boundary_states(batch, boundary)
                for row, index in enumerate(chosen):
                    states[index] = hidden[row, : len(encoded.input_ids[index])].clone()
        finally:
            model.train(was_training)
        return [tensor for tensor in states if tensor is not None]

    @torch.no_grad()
    def _cut_difference(self, boundary: int) -> float:
        """On the longest and shortest training examples (padding included), in eval mode and float32:
        |cut − full| / |full| of their logits."""
        order = sorted(range(len(self.plain_train)), key=lambda i: -len(self.plain_train.input_ids[i]))
        batch = to_device(collate(self.plain_train, [order[0], order[-1]]), self.device)
        mask = batch["attention_mask"]
        was_training = self.model.training
        self.model.eval()
        try:
            full = self.cut.model(input_ids=batch["input_ids"], attention_mask=mask).logits
            states = self.cut.boundary_states(batch, boundary) * mask[..., None]  # the cache pads with 0
            cut = self.model(frozen_outputs=states, attention_mask=mask).logits
        finally:
            self.model.train(was_training)
        return float((cut - full).abs().max() / full.abs().max().clamp_min(1e-6))

    def _event(self, mode: Mode, boundary: int, why: str, details: dict[str, Any] | None = None) -> Event:
        part = frozen_part_name(boundary, self.layers.count)
        how = "computed once per example and reused" if mode == "reuse" else "computed again each step"
        return Event(
            "message",
            f"the frozen {part} run without dropout; their outputs are {how}{why}",
            {"frozen_layers": mode, "frozen_prefix_layers": boundary, **(details or {})},
        )


def lowest_trainable_layer(model: nn.Module, layers: LayerMap) -> int | None:
    """The index of the lowest layer holding a trainable parameter (the count when only the top trains);
    None when something before the stack trains too (the embeddings, a prompt): nothing is frozen."""
    depths = [layers.depth(name) for name, parameter in model.named_parameters() if parameter.requires_grad]
    lowest = min(depths, default=layers.count + 1)
    return None if lowest == 0 else lowest - 1


def frozen_part_name(boundary: int, count: int) -> str:
    """'embeddings and layers 0–3' for the part below layer 4 of a stack of `count`."""
    if boundary == 0:
        return "embeddings"
    if boundary == 1:
        return "embeddings and layer 0"
    every = f" (all {count})" if boundary == count else ""
    return f"embeddings and layers 0–{boundary - 1}{every}"


def frozen_prefix_for(
    spec: JobSpec,
    *,
    model: nn.Module,
    layers: LayerMap,
    task_kind: str,
    train_set: Encoded,
    validation_set: Encoded | None,
    device: torch.device,
    bf16: bool,
    on_event: EventSink,
) -> FrozenPrefix | None:
    """The job's frozen part as `hyperparameters.frozen_layers` says; None: it runs as in training."""
    hp = spec.hyperparameters
    cut = ModelCut(model, layers)
    boundary = layers.count if spec.gradual_unfreeze is not None else lowest_trainable_layer(model, layers)
    frozen = boundary is not None and boundary >= 1  # gradual unfreezing starts with the head alone
    choice, why = hp.frozen_layers, ""
    if choice == "auto":
        if not frozen:
            return None
        declined = _auto_declines(spec, task_kind, cut, steps_per_epoch(len(train_set), hp.batch_size))
        if declined is not None:
            assert boundary is not None
            part = frozen_part_name(boundary, layers.count)
            on_event(
                Event(
                    "message",
                    f"the frozen {part} run with dropout, as in training, every step: {declined} "
                    "(hyperparameters.frozen_layers auto)",
                    {"frozen_layers": "dropout", "frozen_prefix_layers": boundary, "reason": declined},
                )
            )
            return None
        choice = "reuse"
    if choice == "dropout":
        return None
    if choice == "reuse" and cut.refusal is not None:
        choice, why = "recompute", f"; not reused: {cut.refusal}"
    mode: Mode = "reuse" if choice == "reuse" else "recompute"
    return FrozenPrefix(
        mode,
        cut,
        layers,
        train_set,
        validation_set,
        batch_size=hp.batch_size,
        device=device,
        bf16=bf16,
        max_bytes=hp.frozen_outputs_max_mb * 2**20,
        on_event=on_event,
        why=why,
    )


def _auto_declines(spec: JobSpec, task_kind: str, cut: ModelCut, per_epoch: int) -> str | None:
    """Why `auto` leaves the frozen part as in training; None: reuse pays."""
    if task_kind == "causal_lm":
        return "reuse is for sequence_classification"
    if spec.regularizers.kl is not None:
        return "regularizers.kl runs its reference model on the tokens"
    if cut.refusal is not None:
        return cut.refusal
    schedule, epochs = spec.gradual_unfreeze, trained_with(spec).epochs
    stage = epochs if schedule is None else schedule.every / (1 if schedule.unit == "epochs" else per_epoch)
    if min(stage, epochs) < MIN_EPOCHS_TO_PAY:
        return "each boundary would serve under 2 epochs, so caching would not pay"
    return None
