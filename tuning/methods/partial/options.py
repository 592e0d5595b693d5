"""Partial fine-tuning's options: the `method` object of a job spec whose `type` is "partial".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from tuning.spec_base import MethodOptions, module_names


class PartialMethod(MethodOptions):
    """Partial fine-tune: only the chosen modules (and the head) train; all others stay bit-identical."""

    paper: ClassVar[str] = (
        "Yosinski et al. 2014, How transferable are features in deep networks? (arXiv:1411.1792)"
    )
    type: Literal["partial"] = "partial"
    modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Glob patterns over module names, e.g. '*.layer.5.*' or '*.attention.*'.",
    )
    last_n_layers: int | None = Field(None, ge=1, description="Train the last N transformer layers.")
    head_only: bool = Field(False, description="Train the head alone: a linear probe.")

    @field_validator("modules")
    @classmethod
    def _modules_not_blank(cls, names: list[str] | None) -> list[str] | None:
        return names if names is None else module_names(names)

    @model_validator(mode="after")
    def _exactly_one_choice(self) -> Self:
        chosen = [self.modules is not None, self.last_n_layers is not None, self.head_only]
        if sum(chosen) != 1:
            raise ValueError("partial takes exactly one of 'modules', 'last_n_layers' or 'head_only': true")
        return self
