"""Delta tuning's options: the `method` object of a job spec whose `type` is "delta".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tuning.spec_base import MethodOptions, module_names


class DeltaMethod(MethodOptions):
    """Delta tuning: W stays frozen and a dense Δw beside it trains; W+Δw is the fine-tuned weight."""

    paper: ClassVar[str] = "Ding et al. 2022, Delta Tuning (arXiv:2203.06904)"
    type: Literal["delta"] = "delta"
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Linear layers given a Δw (names or name suffixes); null means all of the backbone's.",
    )

    @field_validator("target_modules")
    @classmethod
    def _targets_not_blank(cls, names: list[str] | None) -> list[str] | None:
        return names if names is None else module_names(names)
