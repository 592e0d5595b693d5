"""Parts that compose with any method: the task head, layer-wise learning rates, gradual unfreezing,
regularizers toward the pretrained model, and export options.
"""

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from tuning.spec_base import Activation, CatalogueEntry, SpecModel


class HeadSpec(CatalogueEntry):
    """The new task head, trained by every method: a linear layer, or a small MLP, on the pooled text."""

    paper: ClassVar[str] = "Devlin et al. 2018, BERT (arXiv:1810.04805), section 4"
    type: Literal["linear", "mlp"] = "linear"
    hidden_size: int | None = Field(
        None, ge=1, le=65536, description="MLP width; null means the model's width."
    )
    activation: Activation = "gelu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout before each layer of an MLP head.")
    pooling: Literal["auto", "first", "mean"] = Field(
        "auto",
        description="What the head reads: 'first', the model class's own (BERT's pooler on the first "
        "token); 'mean', the mean of the last hidden states over the real tokens, no pooler "
        "(BERT-style classifiers); 'auto', mean where the base model's folder declares "
        "sentence-transformers mean pooling, else first.",
    )
    initialization: Literal["random", "probe"] = Field(
        "random",
        description="Where the head's last linear layer starts: 'random', the model class's own random "
        "init; 'probe', fitted first, to convergence, as a linear probe of the features the model gives "
        "the training set before training (LP-FT, Kumar et al. 2022, arXiv:2202.10054; one extra "
        "forward pass over the training set), so the job starts at a probe's accuracy.",
    )

    @model_validator(mode="after")
    def _mlp_options_need_mlp(self) -> Self:
        if self.type == "linear" and self.hidden_size is not None:
            raise ValueError("hidden_size applies to an 'mlp' head only")
        return self


class LayerLrDecay(CatalogueEntry):
    """Layer-wise learning rates: lr × decay^(distance from the top); embeddings lowest, head highest."""

    paper: ClassVar[str] = "Howard & Ruder 2018, ULMFiT discriminative fine-tuning (arXiv:1801.06146)"
    decay: float = Field(gt=0.0, le=1.0, description="Multiplier per layer going down from the head.")


class GradualUnfreeze(CatalogueEntry):
    """Gradual unfreezing: the head first, then one more layer group from the top every `every` units."""

    paper: ClassVar[str] = "Howard & Ruder 2018, ULMFiT gradual unfreezing (arXiv:1801.06146)"
    every: int = Field(1, ge=1, description="How many epochs or optimizer steps each stage lasts.")
    unit: Literal["epochs", "steps"] = "epochs"


class L2SPRegularizer(CatalogueEntry):
    """L2-SP: weight·Σ‖θ−θ₀‖² toward the pretrained weights, plus new_weight·Σ‖θ‖² on new parameters."""

    paper: ClassVar[str] = "Li et al. 2018, Explicit Inductive Bias for Transfer Learning (arXiv:1802.01483)"
    weight: float = Field(gt=0.0, le=1e6)
    new_weight: float = Field(0.0, ge=0.0, le=1e6, description="Plain L2 weight on parameters the job added.")


class KLRegularizer(CatalogueEntry):
    """KL: weight·T²·KL(frozen pretrained outputs ‖ current outputs) on each training batch."""

    paper: ClassVar[str] = (
        "Hinton et al. 2015, Distilling the Knowledge (arXiv:1503.02531); Li & Hoiem 2016, LwF"
    )
    weight: float = Field(gt=0.0, le=1e6)
    temperature: float = Field(1.0, gt=0.0, le=100.0)


class EWCRegularizer(CatalogueEntry):
    """EWC: weight·Σ Fᵢ(θᵢ−θ₀ᵢ)², F the diagonal Fisher information on source-task data."""

    paper: ClassVar[str] = "Kirkpatrick et al. 2017, Overcoming catastrophic forgetting (arXiv:1612.00796)"
    weight: float = Field(gt=0.0, le=1e12)
    fisher_file: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Id of an uploaded JSONL file of source-task examples the Fisher is estimated on; "
        "null uses the source job's training file when base_model is a finished job.",
    )
    fisher_examples: int = Field(256, ge=1, le=100_000, description="At most this many source examples.")


class Regularizers(SpecModel):
    """Any combination of penalties toward the pretrained model, each with its own weight."""

    l2sp: L2SPRegularizer | None = None
    kl: KLRegularizer | None = None
    ewc: EWCRegularizer | None = None

    def toward_pretrained_weights(self) -> list[str]:
        """Names of the chosen penalties that pull pretrained weights back (KL acts on outputs)."""
        return [name for name in ("l2sp", "ewc") if getattr(self, name) is not None]


class ExportOptions(CatalogueEntry):
    """Extra forms of the artifact: a merged model, and a delta job's Δw compressed to LoRA by SVD."""

    paper: ClassVar[str] = (
        "Hu et al. 2021, LoRA (arXiv:2106.09685), merging W+BA; "
        "Eckart & Young 1936, truncated SVD is the best low-rank approximation"
    )

    merged: bool = Field(False, description="Also write the full fine-tuned model (save_pretrained layout).")
    lora_rank: int | None = Field(
        None, ge=1, le=4096, description="delta only: compress Δw to LoRA of this rank."
    )
    lora_energy: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="delta only: per layer, the smallest rank keeping this fraction of ‖Δw‖².",
    )

    @model_validator(mode="after")
    def _one_compression(self) -> Self:
        if self.lora_rank is not None and self.lora_energy is not None:
            raise ValueError("give lora_rank or lora_energy, not both")
        return self

    @property
    def compress_to_lora(self) -> bool:
        return self.lora_rank is not None or self.lora_energy is not None
