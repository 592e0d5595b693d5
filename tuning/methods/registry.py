"""How a method registers itself: `register_method(...)`, called once in its package's `__init__.py`.

An entry holds everything deltatune knows of a method, in one place:

- torch-free, for the API: its options model (the spec's `type` is its name), its trainable-parameter
  estimate, its compatibility rules against a `config.json`, an example, and its traits (additive,
  mergeable, PEFT's layout or deltatune's, what it makes of the spec's other parts);
- torch, for the worker: `torch_half` imports the module holding its layers and `apply`, and
  `peft_artifact` the module writing and reading its PEFT-layout artifact. Both are functions, so
  torch loads when a model is built, never when the API validates a spec.

A registration that lacks a required part, or whose parts disagree, raises while the package is
imported: an unknown method can never get a wrong number or a silent default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

from tuning.methods.base_model import ModelConfig, ModelShapes
from tuning.spec_base import MethodOptions

if TYPE_CHECKING:
    from tuning.artifacts.job import ArtifactLayout
    from tuning.methods.apply import MethodModel

Options = TypeVar("Options", bound=MethodOptions)
Layout = Literal["peft", "deltatune"]


class Branches(NamedTuple):
    """The small modules a method runs beside the base's weights (LoRA's low-rank branches), for the
    estimate: each costs a few small operations a batch, whatever its size, and reads its input."""

    modules: int  # how many
    inputs: int  # Σ of their input widths: the activations they read per token
    ranks: int  # Σ of their inner widths: the activations they save per token for backward
    dropout: float  # the dropout on their input (0: none)
    weights: int  # Σ of the adapted weights' elements: what folding them for an evaluation copies


NO_BRANCHES = Branches(0, 0, 0, 0.0, 0)


class PaperRate(NamedTuple):
    """The AdamW learning rate a method's paper fine-tunes with at batch 16, and where it says so."""

    rate: float
    source: str


@dataclass(frozen=True)
class MethodEntry(Generic[Options]):
    name: str  # the spec's `type`
    options: type[Options]
    estimate: Callable[[Options, ModelShapes], int]  # trainable parameters, the head aside
    torch_half: Callable[[], MethodModel]  # imports the module with its layers and `apply`
    peft_artifact: Callable[[], ArtifactLayout] | None  # imports its PEFT-layout writer; None: deltatune's
    additive: bool  # only adds modules or tokens: every pretrained weight keeps its effective value
    mergeable: bool  # its delta folds into the base weights (export.merged)
    compresses_to_lora: bool  # export.lora_rank / lora_energy compress its Δw to LoRA
    compat: tuple[Callable[[Options, ModelConfig], None], ...]  # raise SpecError for a model it cannot fit
    example: Mapping[str, Any]  # the smallest options that make a valid example of it
    changes_pretrained: Callable[[Options], bool]  # whether regularizers toward θ₀ have anything to pull
    unfreeze_refusal: Callable[[Options], str | None]  # why gradual_unfreeze cannot work, if it cannot
    virtual_tokens: Callable[[Options], int]  # positions it puts in front of the text
    virtual_keys_only: bool  # those positions are attention keys and values only, not layer inputs
    # The lowest transformer layer it trains (0: from the input up; the layer count: only what follows
    # the stack): backward runs down to it, and the layers below it can run once (tuning.frozen_prefix).
    lowest_layer: Callable[[Options, ModelShapes], int]
    frozen_base: Callable[[Options], bool]  # trains only new tensors: every pretrained one stays as loaded
    learning_rate: Callable[[Options], PaperRate]  # what "auto" trains it at (tuning.auto)
    branches: Callable[[Options, ModelShapes], Branches]  # small modules beside the base's weights

    @property
    def layout(self) -> Layout:
        """PEFT's layout (with a linear head) when PEFT implements the method, else deltatune's."""
        return "deltatune" if self.peft_artifact is None else "peft"


def register_method(
    *,
    name: str,
    options: type[Options],
    estimate: Callable[[Options, ModelShapes], int],
    torch_half: Callable[[], MethodModel],
    learning_rate: Callable[[Options], PaperRate],
    additive: bool,
    mergeable: bool,
    peft_artifact: Callable[[], ArtifactLayout] | None = None,
    compresses_to_lora: bool = False,
    compat: Sequence[Callable[[Options, ModelConfig], None]] = (),
    example: Mapping[str, Any] | None = None,
    changes_pretrained: Callable[[Options], bool] | None = None,
    unfreeze_refusal: Callable[[Options], str | None] | None = None,
    virtual_tokens: Callable[[Options], int] | None = None,
    virtual_keys_only: bool = False,
    lowest_layer: Callable[[Options, ModelShapes], int] | None = None,
    frozen_base: Callable[[Options], bool] | None = None,
    branches: Callable[[Options, ModelShapes], Branches] | None = None,
) -> MethodEntry[Options]:
    """The method's entry, checked: call it once, in the method package's `__init__.py`."""
    declared = options.model_fields["type"].default if "type" in options.model_fields else None
    if declared != name:
        raise TypeError(
            f"method {name!r}: {options.__name__}.type must default to {name!r}, not {declared!r}"
        )
    doc = options.__dict__.get("__doc__")
    if not doc or not doc.strip() or not options.paper.strip():
        raise TypeError(
            f"method {name!r}: {options.__name__} needs a docstring and a paper for the catalogue"
        )
    for part, value in (("estimate", estimate), ("torch_half", torch_half), ("learning_rate", learning_rate)):
        if not callable(value):
            raise TypeError(f"method {name!r} registers no {part}: every method needs one")
    if additive and mergeable:
        raise TypeError(
            f"method {name!r}: an additive method leaves the base weights as they are: nothing to merge"
        )
    # An example the options refuse would break GET /v1/methods: fail at import instead.
    options.model_validate(example or {})
    return MethodEntry(
        name=name,
        options=options,
        estimate=estimate,
        torch_half=torch_half,
        peft_artifact=peft_artifact,
        additive=additive,
        mergeable=mergeable,
        compresses_to_lora=compresses_to_lora,
        compat=tuple(compat),
        example=dict(example or {}),
        changes_pretrained=changes_pretrained or (lambda _: not additive),
        unfreeze_refusal=unfreeze_refusal or (lambda _: None),
        virtual_tokens=virtual_tokens or (lambda _: 0),
        virtual_keys_only=virtual_keys_only,
        lowest_layer=lowest_layer or (lambda _options, _shapes: 0),
        frozen_base=frozen_base or (lambda _: additive),
        learning_rate=learning_rate,
        branches=branches or (lambda _options, _shapes: NO_BRANCHES),
    )


def by_name(entries: Sequence[MethodEntry[Any]]) -> dict[str, MethodEntry[Any]]:
    """The entries keyed by name, in the order given; a name registered twice is refused."""
    found: dict[str, MethodEntry[Any]] = {}
    for entry in entries:
        if entry.name in found:
            raise TypeError(f"method {entry.name!r} is registered twice")
        found[entry.name] = entry
    return found
