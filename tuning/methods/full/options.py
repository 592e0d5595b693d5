"""Full fine-tuning's options: the `method` object of a job spec whose `type` is "full".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from tuning.spec_base import MethodOptions


class FullMethod(MethodOptions):
    """Entire fine-tune: every parameter trains; the pretrained weights are only the starting point."""

    paper: ClassVar[str] = "Howard & Ruder 2018, Universal Language Model Fine-tuning (arXiv:1801.06146)"
    type: Literal["full"] = "full"
