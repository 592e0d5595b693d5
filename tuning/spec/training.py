"""How a job reads its data and what it keeps while training: tasks, data options, evaluation
metrics, early stopping and checkpoints.
"""

from typing import Literal

from pydantic import Field

from tuning.spec_base import SpecModel

Task = Literal["sequence_classification", "causal_lm"]

# sequence_classification only: what each example's label means. Null in a spec means "as the
# training file says": `labels` lists → multi_label, a non-integer number → regression, else single.
ProblemType = Literal["single_label", "multi_label", "regression"]

# What a training file holds, detected from its first line's keys (tuning.data.formats).
DataFormat = Literal["classification", "multi_label", "regression", "text", "prompt_completion", "chat"]

# The file format each classification problem type reads (regression also reads integer class labels).
FORMAT_OF_PROBLEM: dict[str, DataFormat] = {
    "single_label": "classification",
    "multi_label": "multi_label",
    "regression": "regression",
}

FORMATS_BY_TASK: dict[str, tuple[DataFormat, ...]] = {
    "sequence_classification": ("classification", "multi_label", "regression"),
    "causal_lm": ("text", "prompt_completion", "chat"),
}

# Every evaluation reports all the metrics of its kind; `loss` is always among them.
METRICS: dict[str, tuple[str, ...]] = {
    "single_label": ("loss", "accuracy", "macro_f1"),
    "multi_label": ("loss", "micro_f1", "macro_f1", "exact_match"),
    "regression": ("loss", "mse", "r2"),
    "causal_lm": ("loss", "perplexity", "token_accuracy"),
}
LOWER_IS_BETTER = frozenset({"loss", "mse", "perplexity"})
MetricName = Literal[
    "loss", "accuracy", "macro_f1", "micro_f1", "exact_match", "mse", "r2", "perplexity", "token_accuracy"
]


class DataOptions(SpecModel):
    """How examples become token sequences."""

    packing: bool = Field(
        False,
        description="causal_lm: join short examples, an end-of-text token between them, into full "
        "max_seq_length sequences (attention spans the whole packed sequence, as in GPT-2's training).",
    )
    chat_template: str | None = Field(
        None,
        max_length=65536,
        description="causal_lm chat data: a Jinja chat template to use instead of the tokenizer's own.",
    )


class EarlyStopping(SpecModel):
    """Stop when `metric` has not improved for `patience` evaluations; publish the best evaluation's model."""

    metric: MetricName = Field("loss", description="A validation metric of the job's task, e.g. macro_f1.")
    patience: int = Field(3, ge=1, le=1000, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smaller improvements do not count.")


class CheckpointOptions(SpecModel):
    """Checkpoints kept while training, each an artifact in the final artifact's layout."""

    every_steps: int | None = Field(
        None, ge=1, description="Write one every N optimizer steps; null writes one at each epoch's end."
    )
    keep: int = Field(3, ge=1, le=100, description="At most this many are kept; the oldest go first.")
