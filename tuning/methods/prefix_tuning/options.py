"""Prefix tuning's options: the `method` object of a job spec whose `type` is "prefix_tuning".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from pydantic import Field

from tuning.spec_base import MethodOptions


class PrefixTuningMethod(MethodOptions):
    """Prefix tuning: learnable key/value prefixes at every attention layer of a frozen model."""

    paper: ClassVar[str] = "Li & Liang 2021, Prefix-Tuning (arXiv:2101.00190)"
    type: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    projection: bool = Field(
        False, description="Reparameterise through an MLP while training (exported without it)."
    )
    encoder_hidden_size: int | None = Field(
        None, ge=1, le=65536, description="Width of the reparameterisation MLP; null means the model's width."
    )
