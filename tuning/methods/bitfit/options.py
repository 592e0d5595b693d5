"""BitFit's options: the `method` object of a job spec whose `type` is "bitfit".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from tuning.spec_base import MethodOptions


class BitFitMethod(MethodOptions):
    """BitFit: only the bias terms (and the head) train."""

    paper: ClassVar[str] = "Ben Zaken et al. 2021, BitFit (arXiv:2106.10199)"
    type: Literal["bitfit"] = "bitfit"
