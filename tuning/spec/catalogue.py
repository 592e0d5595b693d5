"""The catalogue `GET /v1/methods` lists: every method and composable part of a job spec.

Built from the same pydantic models that validate job specs, so the listing, the OpenAPI schema and
the validation can never disagree: a description is the model's docstring, an options schema its
`model_json_schema()`, an example a value the model itself produced. Imports no torch.
"""

import inspect
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuning.methods import METHODS
from tuning.methods.registry import MethodEntry
from tuning.spec.parts import (
    EWCRegularizer,
    ExportOptions,
    GradualUnfreeze,
    HeadSpec,
    KLRegularizer,
    L2SPRegularizer,
    LayerLrDecay,
)
from tuning.spec_base import CatalogueEntry

Kind = Literal["method", "part"]
ArtifactLayout = Literal["peft", "deltatune"]

# Parts in the order a job spec reads: (catalogue name, dotted field of JobSpec holding it, model).
PARTS: tuple[tuple[str, str, type[CatalogueEntry]], ...] = (
    ("head", "head", HeadSpec),
    ("layer_lr_decay", "layer_lr_decay", LayerLrDecay),
    ("gradual_unfreeze", "gradual_unfreeze", GradualUnfreeze),
    ("l2sp", "regularizers.l2sp", L2SPRegularizer),
    ("kl", "regularizers.kl", KLRegularizer),
    ("ewc", "regularizers.ewc", EWCRegularizer),
    ("export", "export", ExportOptions),
)

# Options a part cannot default: the smallest choice that makes a valid example of it (a method's
# is in its registration).
EXAMPLE_CHOICES: dict[type[CatalogueEntry], dict[str, Any]] = {
    LayerLrDecay: {"decay": 0.8},
    L2SPRegularizer: {"weight": 0.01},
    KLRegularizer: {"weight": 0.1},
    EWCRegularizer: {"weight": 100.0, "fisher_file": "file-abc123"},
}


class CatalogueItem(BaseModel):
    """One method or part, as `GET /v1/methods` lists it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The method's `type`, or the part's name.")
    kind: Kind
    description: str = Field(description="One line: what it does.")
    paper: str = Field(description="Where the technique comes from.")
    spec_field: str = Field(
        description="Where its options go in a job spec (dotted); a method's `type` selects it there."
    )
    options_schema: dict[str, Any] = Field(
        description="JSON schema of its options, as job specs validate them."
    )
    example: dict[str, Any] = Field(description="Valid options, ready to put at `spec_field`.")
    artifact_layout: ArtifactLayout | None = Field(
        None, description="Methods: 'peft' (with a linear head) or 'deltatune'; null for parts."
    )
    mergeable: bool | None = Field(
        None, description="Methods: whether export.merged can fold it into the base weights; null for parts."
    )
    auto_learning_rate: float | None = Field(
        None,
        description='Methods: the rate learning_rate "auto" trains the example options at, batch 16 '
        "(scaled by sqrt(batch_size / 16)); null for parts.",
    )
    auto_learning_rate_source: str | None = Field(
        None, description="Methods: the paper and range that rate comes from; null for parts."
    )


@cache
def catalogue() -> tuple[CatalogueItem, ...]:
    """Every registered method (in tuning.methods.METHODS order), then every part."""
    return tuple(method_item(entry) for entry in METHODS.values()) + tuple(
        part_item(name, spec_field, model) for name, spec_field, model in PARTS
    )


def method_item(entry: MethodEntry[Any]) -> CatalogueItem:
    model = entry.options
    options = model.model_validate(entry.example)
    paper_rate = entry.learning_rate(options)
    return CatalogueItem(
        name=entry.name,
        kind="method",
        description=description(model),
        paper=model.paper,
        spec_field="method",
        options_schema=model.model_json_schema(),
        example=options.model_dump(mode="json"),
        artifact_layout=entry.layout,
        mergeable=entry.mergeable,
        auto_learning_rate=paper_rate.rate,
        auto_learning_rate_source=paper_rate.source,
    )


def part_item(name: str, spec_field: str, model: type[CatalogueEntry]) -> CatalogueItem:
    return CatalogueItem(
        name=name,
        kind="part",
        description=description(model),
        paper=model.paper,
        spec_field=spec_field,
        options_schema=model.model_json_schema(),
        example=example(model),
    )


def description(model: type[CatalogueEntry]) -> str:
    # A class docstring is never inherited, so a model without one fails here, not in a client.
    doc = model.__dict__.get("__doc__")
    if not doc or not doc.strip():
        raise TypeError(f"{model.__name__} needs a docstring: its first line is its catalogue description")
    return inspect.cleandoc(doc).splitlines()[0]


def example(model: type[CatalogueEntry]) -> dict[str, Any]:
    """Valid options for the part `model`, validated by the model itself, with every default spelled out."""
    return model.model_validate(EXAMPLE_CHOICES.get(model, {})).model_dump(mode="json")
