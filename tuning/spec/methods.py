"""The method catalogue's options: one pydantic model per method, keyed by `type`.

These models are the request body, the OpenAPI schema, what `GET /v1/methods` lists and what the
worker reads. They import no torch: the API validates specs without it. Each class's docstring is
its one-line description in the catalogue and `paper` its reference.
"""

from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Activation = Literal["relu", "gelu", "swish", "tanh"]


class SpecModel(BaseModel):
    """Base for every spec model: unknown fields are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


class CatalogueEntry(SpecModel):
    """A spec model that appears in `GET /v1/methods`: its docstring's first line and its paper."""

    paper: ClassVar[str] = ""


def _module_names(names: list[str]) -> list[str]:
    if any(not name.strip() for name in names):
        raise ValueError("module names must not be blank")
    return names


class FullMethod(CatalogueEntry):
    """Entire fine-tune: every parameter trains; the pretrained weights are only the starting point."""

    paper: ClassVar[str] = "Howard & Ruder 2018, Universal Language Model Fine-tuning (arXiv:1801.06146)"
    type: Literal["full"] = "full"


class PartialMethod(CatalogueEntry):
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
        return names if names is None else _module_names(names)

    @model_validator(mode="after")
    def _exactly_one_choice(self) -> Self:
        chosen = [self.modules is not None, self.last_n_layers is not None, self.head_only]
        if sum(chosen) != 1:
            raise ValueError("partial takes exactly one of 'modules', 'last_n_layers' or 'head_only': true")
        return self


class BitFitMethod(CatalogueEntry):
    """BitFit: only the bias terms (and the head) train."""

    paper: ClassVar[str] = "Ben Zaken et al. 2021, BitFit (arXiv:2106.10199)"
    type: Literal["bitfit"] = "bitfit"


class AdapterMethod(CatalogueEntry):
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


class InputAdapterMethod(CatalogueEntry):
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


class DeltaMethod(CatalogueEntry):
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
        return names if names is None else _module_names(names)


class PromptTuningMethod(CatalogueEntry):
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


class PrefixTuningMethod(CatalogueEntry):
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


class LoraMethod(CatalogueEntry):
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
        return _module_names(names)

    @field_validator("rank_pattern")
    @classmethod
    def _ranks_are_positive(cls, pattern: dict[str, int]) -> dict[str, int]:
        if any(rank < 1 or rank > 1024 for rank in pattern.values()):
            raise ValueError("rank_pattern ranks must be between 1 and 1024")
        _module_names(list(pattern))
        return pattern

    @field_validator("layers_to_transform")
    @classmethod
    def _layers_are_indices(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and any(index < 0 for index in layers):
            raise ValueError("layers_to_transform holds layer indices, 0 or more")
        return layers


METHOD_MODELS: tuple[type[CatalogueEntry], ...] = (
    FullMethod,
    PartialMethod,
    BitFitMethod,
    AdapterMethod,
    InputAdapterMethod,
    DeltaMethod,
    PromptTuningMethod,
    PrefixTuningMethod,
    LoraMethod,
)

# A discriminated union keyed by `type`: the spec name is both the discriminator and the registry key.
Method = Annotated[
    FullMethod
    | PartialMethod
    | BitFitMethod
    | AdapterMethod
    | InputAdapterMethod
    | DeltaMethod
    | PromptTuningMethod
    | PrefixTuningMethod
    | LoraMethod,
    Field(discriminator="type"),
]

# Methods that leave every pretrained weight's effective value alone: they only add modules or tokens.
ADDITIVE_METHODS = frozenset({"adapter", "input_adapter", "prompt_tuning", "prefix_tuning"})
# Methods whose trained delta can be folded into the base weights for a merged export.
MERGEABLE_METHODS = frozenset({"full", "partial", "bitfit", "delta", "lora"})
# Methods written in PEFT's layout (with a linear head); every other artifact uses deltatune's layout.
PEFT_METHODS = frozenset({"lora", "prompt_tuning", "prefix_tuning"})
