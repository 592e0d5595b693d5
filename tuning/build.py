"""Building the model a spec describes: the task's model (a classifier gets its new head), then the method.

Training (`tuning.run`) and reloading an artifact (`tuning.load_artifact`) build it the same way, so
an artifact's tensors land in exactly the modules they were trained in.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuning.data import Label
from tuning.layers import LayerMap, find_layers
from tuning.methods import method_entry
from tuning.methods.apply import Applied, MethodContext, apply_method
from tuning.parts.head import build_head
from tuning.parts.mean_pooler import use_mean_pooling
from tuning.parts.pooling import resolve_pooling
from tuning.spec import JobSpec
from tuning.task_model import TaskModel, load_classifier


@dataclass
class Built:
    task_model: TaskModel
    layers: LayerMap
    applied: Applied
    tokenizer_changed: bool  # the method added tokens


def prepare_classifier(spec: JobSpec, base_path: Path, labels: Sequence[Label]) -> TaskModel:
    """The base model with the spec's head for `labels`: backbone frozen, head trainable.

    A regression head (no labels) has one output.
    """
    classifier = load_classifier(
        base_path,
        labels,
        max_seq_length=spec.hyperparameters.max_seq_length,
        problem_type=spec.problem_type or "single_label",
    )
    pooling, _ = resolve_pooling(spec.head.pooling, base_path)
    if pooling == "mean":
        mean_pooled(classifier)
    outputs = len(labels) or 1
    classifier.head_modules = build_head(classifier.model, classifier.head_modules, spec.head, outputs)
    limit_for_virtual_tokens(spec, classifier)
    return classifier


def mean_pooled(classifier: TaskModel) -> None:
    """The classifier reading the tokens' mean: its pooler replaced (tuning.parts.pooling), so the
    pooler's dense layer is neither trained, saved, nor counted as pretrained."""
    use_mean_pooling(classifier.model)
    backbone = getattr(classifier.model, "base_model_prefix", "")
    pooler = f"{backbone}.pooler" if backbone else "pooler"
    classifier.head_modules = [
        name for name in classifier.head_modules if name != pooler and not name.startswith(pooler + ".")
    ]
    kept = set(classifier.model.state_dict())
    classifier.pretrained = frozenset(key for key in classifier.pretrained if key in kept)


def limit_for_virtual_tokens(spec: JobSpec, task_model: TaskModel) -> None:
    # A method's virtual tokens (prompt, prefix) take the first positions: encode no more text than fits.
    virtual = method_entry(spec.method.type).virtual_tokens(spec.method)
    positions = getattr(task_model.model.config, "max_position_embeddings", None)
    if virtual and isinstance(positions, int):
        task_model.max_length = min(task_model.max_length, positions - virtual)


def apply_spec_method(spec: JobSpec, task_model: TaskModel) -> Built:
    layers = find_layers(task_model.model, task_model.head_modules)
    vocabulary = len(task_model.tokenizer)
    context = MethodContext(task_model.tokenizer, task_model.head_modules, layers)
    applied = apply_method(task_model.model, spec.method, context)
    return Built(task_model, layers, applied, tokenizer_changed=len(task_model.tokenizer) != vocabulary)
