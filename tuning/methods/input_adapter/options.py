"""The input adapter's options: the `method` object of a job spec whose `type` is "input_adapter".

The docstring's first line is the method's description in `GET /v1/methods`, `paper` its reference.
No torch: the API validates specs with it.
"""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tuning.spec_base import Activation, MethodOptions


class InputAdapterMethod(MethodOptions):
    """A domain input encoder: a residual bottleneck on the input embeddings, and optional new tokens."""

    paper: ClassVar[str] = (
        "Pfeiffer et al. 2021, UNKs Everywhere: Adapting Multilingual LMs (arXiv:2012.15562)"
    )
    type: Literal["input_adapter"] = "input_adapter"
    reduction_factor: int | None = Field(4, ge=1, description="Bottleneck = hidden size / reduction_factor.")
    bottleneck_size: int | None = Field(
        None, ge=1, description="Bottleneck width; overrides reduction_factor."
    )
    non_linearity: Activation = "relu"
    new_tokens: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Domain tokens added to the tokenizer; only their embeddings (and the encoder) train.",
    )

    @field_validator("new_tokens")
    @classmethod
    def _distinct_and_not_blank(cls, tokens: list[str]) -> list[str]:
        if any(not token.strip() for token in tokens):
            raise ValueError("new_tokens must not contain blank tokens")
        if len(set(tokens)) != len(tokens):
            raise ValueError("new_tokens must not repeat a token")
        return tokens
