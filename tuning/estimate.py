"""What a job would cost, estimated before it runs from the validation report and the base model's files.

Imports no torch: the API answers a dry run with it. How each figure is made (also returned as text):

- steps = epochs × ceil(sequences / batch_size); sequences are the training examples, or with packing
  ceil(Σ tokens / max_seq_length). Early stopping can only make it fewer.
- tokens = Σ min(tokens, max_seq_length) over the training file × epochs (packing cuts nothing: Σ
  tokens; without a tokenizer.json, max_seq_length per example: an upper bound).
- parameters P: the sum of the tensor shapes in the base model's safetensors headers; trainable T from
  the method's registered estimate (full: all; LoRA r·(in+out) per targeted weight; BitFit the biases;
  adapters, prompts and prefixes from their sizes; partial last_n_layers its share of the layers) plus
  a classifier's new head (its model family's: BERT's classifier, RoBERTa's dense and out_proj,
  DistilBERT's pre_classifier and classifier, a decoder's bias-free score; an MLP head's two layers;
  a pooler the checkpoint lacks), as many outputs as the training file has labels (1 for regression).
- seconds = (4·P + 2·T) × tokens / worker FLOP/s (forward 2·P, backward 2·P for activations and 2·T
  for weight gradients: 6·P for full fine-tuning) + evaluations × 2·P × validation tokens / FLOP/s.
- peak memory bytes = 4·P (float32 weights) + 12·T (gradient and AdamW's two moments) + activations
  2 × layers × seq × batch × hidden × (34 + 5·heads·seq/hidden) (Korthikanti et al. 2022, arXiv:2205.05198,
  per layer for 16-bit activations; doubled for float32), seq = the longest trained example.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.methods import method_entry
from tuning.methods.base_model import ModelShapes
from tuning.models import tensor_shapes
from tuning.spec import JobSpec

METHOD_TEXT = " ".join(
    line.strip() for line in (__doc__ or "").split("How each figure is made", 1)[1].splitlines()[1:]
)


@dataclass(frozen=True)
class Estimate:
    steps: int
    tokens: int
    parameters: int
    trainable_parameters: int
    seconds: float
    peak_memory_bytes: int
    method: str = METHOD_TEXT


def count_parameters(model_dir: Path) -> int:
    """The base model's parameter count, without loading it: the sum of its tensors' sizes."""
    return sum(math.prod(shape) for shape in tensor_shapes(model_dir).values())


def estimate_job(
    spec: JobSpec, base_path: Path, report: Mapping[str, Any], *, flops_per_second: float
) -> Estimate:
    """The dry run's figures for `spec` on the files `report` (tuning.validation) describes."""
    hp = spec.hyperparameters
    training = report["files"]["training_file"]
    trained_tokens = training.get("trained_tokens", training["examples"] * hp.max_seq_length)
    sequences = training["examples"]
    if spec.data.packing:
        sequences = training.get("packed_sequences", math.ceil(trained_tokens / hp.max_seq_length))
    steps = hp.epochs * math.ceil(sequences / hp.batch_size)
    tokens = trained_tokens * hp.epochs
    shapes = tensor_shapes(base_path)
    config = _config(base_path)
    parameters = sum(math.prod(shape) for shape in shapes.values())
    trainable = trainable_parameters(spec, shapes, config, outputs=_outputs(spec, training))
    seconds = (4 * parameters + 2 * trainable) * tokens / flops_per_second
    validation = report["files"].get("validation_file")
    if validation is not None:
        evaluations = 1 + (hp.epochs if hp.eval_steps is None else steps // hp.eval_steps)
        val_tokens = validation.get("trained_tokens", validation["examples"] * hp.max_seq_length)
        seconds += evaluations * 2 * parameters * val_tokens / flops_per_second
    longest = (
        hp.max_seq_length
        if spec.data.packing
        else min(training.get("tokens", {}).get("max", hp.max_seq_length), hp.max_seq_length)
    )
    memory = (
        4 * parameters + 12 * trainable + _activation_bytes(config, batch=hp.batch_size, seq=int(longest))
    )
    return Estimate(steps, tokens, parameters, trainable, seconds, memory)


def trainable_parameters(
    spec: JobSpec, shapes: Mapping[str, tuple[int, ...]], config: Mapping[str, Any], *, outputs: int
) -> int:
    """How many parameters the job trains, as its `training started` event counts them: the method's
    registered estimate (tuning/methods/<type>/__init__.py), at most the base's size, plus a
    classifier's head with `outputs` outputs (`head_parameters`; none for causal_lm)."""
    model = ModelShapes(shapes, config)
    method = min(method_entry(spec.method.type).estimate(spec.method, model), model.total())
    return method + (head_parameters(spec, model, outputs) if spec.task == "sequence_classification" else 0)


# Sequence-classification heads of transformers' model classes, by config.json's model_type: what
# AutoModelForSequenceClassification adds to a backbone checkpoint (tuning.task_model trains it all).
DENSE_THEN_OUT = frozenset(  # a dense h→h layer, then out_proj (DeBERTa: its pooler, then classifier)
    {"roberta", "xlm-roberta", "camembert", "electra", "mpnet", "longformer", "data2vec-text", "deberta"}
    | {"deberta-v2", "xlm-roberta-xl", "roberta-prelayernorm"}
)
PRE_CLASSIFIER = frozenset({"distilbert"})  # pre_classifier h→h, then classifier
# BERT-like: the pooler (pretrained unless the checkpoint lacks it), then classifier.
POOLED = frozenset({"bert", "albert", "ernie", "megatron-bert", "roc_bert", "nezha"})
LAST_TOKEN_SCORE = frozenset(  # decoders: a bias-free `score` on the last real token's state
    {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi", "phi3"}
    | {"gemma", "gemma2", "falcon", "bloom", "starcoder2", "olmo", "stablelm", "persimmon", "biogpt"}
)


def head_parameters(spec: JobSpec, shapes: ModelShapes, outputs: int) -> int:
    """Parameters of the new classification head, from the model family and the spec's head."""
    hidden, model_type = shapes.hidden, str(shapes.config.get("model_type", ""))
    bias = model_type not in LAST_TOKEN_SCORE
    before = 0  # what comes before the layer that produces the logits, and stays an MLP head too
    if model_type in DENSE_THEN_OUT | PRE_CLASSIFIER:
        before = hidden * hidden + hidden
    elif model_type in POOLED and not any(".pooler." in f".{name}" for name in shapes.tensors):
        before = hidden * hidden + hidden  # a pooler the checkpoint lacks is initialised, so trained
    if spec.head.type == "mlp":
        width = spec.head.hidden_size or hidden
        logits = hidden * width + width + width * outputs + (outputs if bias else 0)
    else:
        logits = hidden * outputs + (outputs if bias else 0)
    return before + logits


def _outputs(spec: JobSpec, training: Mapping[str, Any]) -> int:
    """The head's outputs: one per label of the training file, one for a regression target."""
    if spec.problem_type == "regression" or training.get("format") == "regression":
        return 1
    return max(len(training.get("labels", {})), 1)


def _activation_bytes(config: Mapping[str, Any], *, batch: int, seq: int) -> int:
    model = ModelShapes({}, config)
    hidden, layers = model.hidden, model.layers
    heads = model.dimension("num_attention_heads", "n_head")
    per_layer = seq * batch * hidden * (34 + 5 * heads * seq / max(hidden, 1))
    return int(2 * layers * per_layer)


def _config(base_path: Path) -> dict[str, Any]:
    path = base_path / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
