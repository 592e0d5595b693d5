"""Bottleneck adapters's options: the `method` object of a job spec whose `type` is "adapter".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from pydantic import Field

from tuning.spec_base import Activation, MethodOptions


class AdapterMethod(MethodOptions):
    """Bottleneck adapters inside every layer, identity at init; the base weights stay untouched."""

    paper: ClassVar[str] = (
        "Houlsby et al. 2019 (arXiv:1902.00751); Pfeiffer et al. 2020, AdapterFusion (arXiv:2005.00247)"
    )
    type: Literal["adapter"] = "adapter"
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby",
        description=(
            "houlsby: after attention and after the feed-forward block; "
            "pfeiffer: after the feed-forward block only."
        ),
    )
    reduction_factor: int | None = Field(16, ge=1, description="Bottleneck = hidden size / reduction_factor.")
    bottleneck_size: int | None = Field(
        None, ge=1, description="Bottleneck width; overrides reduction_factor."
    )
    non_linearity: Activation = "relu"
