"""Prompt tuning's options: the `method` object of a job spec whose `type` is "prompt_tuning".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from tuning.spec_base import MethodOptions


class PromptTuningMethod(MethodOptions):
    """Prompt tuning: learnable virtual tokens prepended to the input embeddings of a frozen model."""

    paper: ClassVar[str] = (
        "Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (arXiv:2104.08691)"
    )
    type: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    init: Literal["random", "text"] = Field("random", description="random, or the embeddings of init_text.")
    init_text: str | None = Field(None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _text_init_needs_text(self) -> Self:
        if self.init == "text" and self.init_text is None:
            raise ValueError("init 'text' needs init_text")
        if self.init == "random" and self.init_text is not None:
            raise ValueError("init_text is only used with init 'text'")
        return self
