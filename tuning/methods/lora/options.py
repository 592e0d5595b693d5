"""LoRA's options: the `method` object of a job spec whose `type` is "lora".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tuning.spec_base import MethodOptions, module_names

# Up to this dropout, training on a CPU draws only the dropped positions of LoRA's input
# (tuning.methods.lora.dropped_down); above it, as many as are kept: torch's dropout costs no more.
SPARSE_DROPOUT_UP_TO = 0.25


class LoraMethod(MethodOptions):
    """LoRA: W stays frozen, a low-rank update B·A scaled by alpha/r is trained."""

    paper: ClassVar[str] = (
        "Hu et al. 2021, LoRA (arXiv:2106.09685); rsLoRA (arXiv:2312.03732); LoRA+ (arXiv:2402.12354)"
    )
    type: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, le=1024, description="Rank of the update.")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator: the update is multiplied by alpha/r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path's input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        min_length=1,
        description="Linear layers to adapt: exact module names or name suffixes (e.g. 'query').",
    )
    use_rslora: bool = Field(
        False, description="Scale by alpha/sqrt(r) instead of alpha/r (rank-stabilised)."
    )
    layers_to_transform: list[int] | None = Field(
        None, min_length=1, description="Adapt only these transformer layer indices (0 = first)."
    )
    rank_pattern: dict[str, int] = Field(
        default_factory=dict,
        description="Per-module ranks overriding r: module name or suffix → rank, e.g. {'value': 16}.",
    )
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, le=1000, description="LoRA+: B's learning rate is the job's learning rate × this ratio."
    )

    @field_validator("target_modules")
    @classmethod
    def _targets_not_blank(cls, names: list[str]) -> list[str]:
        return module_names(names)

    @field_validator("rank_pattern")
    @classmethod
    def _ranks_are_positive(cls, pattern: dict[str, int]) -> dict[str, int]:
        if any(rank < 1 or rank > 1024 for rank in pattern.values()):
            raise ValueError("rank_pattern ranks must be between 1 and 1024")
        module_names(list(pattern))
        return pattern

    @field_validator("layers_to_transform")
    @classmethod
    def _layers_are_indices(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and any(index < 0 for index in layers):
            raise ValueError("layers_to_transform holds layer indices, 0 or more")
        return layers
