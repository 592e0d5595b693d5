"""The base classes of the job spec: what every spec model is, what `GET /v1/methods` lists, and what
every method's options are.

Imports only pydantic: `tuning.spec` builds the job spec on it and each method package under
`tuning/methods/` its options, and neither has to import the other to do so.
"""

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

Activation = Literal["relu", "gelu", "swish", "tanh"]


class SpecModel(BaseModel):
    """Base for every spec model: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class CatalogueEntry(SpecModel):
    """A spec model that appears in `GET /v1/methods`: its docstring's first line and its paper."""

    paper: ClassVar[str] = ""


class MethodOptions(CatalogueEntry):
    """A method's options; each method narrows `type` to its own name, the spec's discriminator."""

    type: str


def module_names(names: list[str]) -> list[str]:
    """A validator's check of a list of module names or patterns: none may be blank."""
    if any(not name.strip() for name in names):
        raise ValueError("module names must not be blank")
    return names
