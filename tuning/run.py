"""`tuning.run`: one fine-tuning job from data files to an artifact folder, callable from a shell.

Order matters for the user: cheap checks first (base model known, data valid, labels consistent),
so a bad job fails in a second, not after the model has loaded; the artifact is written only once
training has finished, so a failed or cancelled run leaves `out_dir` as it found it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.data import Example, Label, build_label_map, check_validation_labels, read_classification_file
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.models import resolve_base_model
from tuning.spec import JobSpec

if TYPE_CHECKING:
    from torch import nn

    from tuning.batching import Encoded
    from tuning.classifier import Classifier
    from tuning.train import TrainResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    metrics: dict[str, float]
    examples_seen: int
    trained_tokens: int
    steps: int
    files: list[str]  # names written into out_dir


def run(
    spec: JobSpec,
    out_dir: Path,
    *,
    training_path: Path,
    validation_path: Path | None = None,
    model_dirs: Sequence[Path] = (),
    on_event: EventSink = ignore_event,
    should_stop: StopCheck = never_stop,
) -> RunResult:
    """Fine-tune `spec.base_model` on `training_path` and write the artifact into `out_dir`.

    Raises DataError, SpecError, ModelNotFound, or Cancelled when `should_stop()` turns true.
    """
    # torch and transformers load here, not at import: the API imports tuning without them.
    from tuning.classifier import load_classifier
    from tuning.device import pick_device
    from tuning.export import write_lora_artifact
    from tuning.lora import apply_lora
    from tuning.train import seed_everything, train

    base_path = resolve_base_model(spec.base_model, model_dirs)
    train_examples, validation_examples, labels = _read_data(training_path, validation_path)
    on_event(_data_summary(train_examples, validation_examples, labels))

    hp = spec.hyperparameters
    seed_everything(hp.seed)  # before the model is built: the new head's init is part of the run
    device = pick_device()
    on_event(Event("message", f"loading {spec.base_model} on {device.type}", {"device": device.type}))
    classifier = load_classifier(base_path, labels, max_seq_length=hp.max_seq_length)
    model: nn.Module = classifier.model  # typed as a plain module: transformers' .to() stubs are odd
    adapted = apply_lora(model, spec.method, exclude=classifier.head_modules)
    model.to(device)

    train_set = _encode(classifier, train_examples, labels)
    validation_set = _encode(classifier, validation_examples, labels) if validation_examples else None
    on_event(_training_started(model, adapted, classifier.head_modules))
    result = train(
        model, train_set, validation_set, hp, device=device, on_event=on_event, should_stop=should_stop
    )

    metrics = _final_metrics(result)
    on_event(Event("message", f"exporting the adapter to {out_dir.name}", {}))
    files = write_lora_artifact(
        out_dir,
        spec=spec,
        model=model,
        head_modules=classifier.head_modules,
        labels=labels,
        base_model_path=base_path,
        metrics=metrics,
    )
    logger.info("%s: %d steps in %.1f s, metrics %s", spec.base_model, result.steps, result.seconds, metrics)
    return RunResult(metrics, result.examples_seen, result.trained_tokens, result.steps, files)


def _read_data(
    training_path: Path, validation_path: Path | None
) -> tuple[list[Example], list[Example], list[Label]]:
    train_examples = read_classification_file(training_path, param="training_file")
    labels = build_label_map(train_examples)
    validation_examples: list[Example] = []
    if validation_path is not None:
        validation_examples = read_classification_file(validation_path, param="validation_file")
        check_validation_labels(validation_examples, labels)
    return train_examples, validation_examples, labels


def _encode(classifier: Classifier, examples: Sequence[Example], labels: Sequence[Label]) -> Encoded:
    from tuning.batching import encode

    index = {label: position for position, label in enumerate(labels)}
    return encode(
        classifier.tokenizer,
        [example.text for example in examples],
        [index[example.label] for example in examples],
        max_length=classifier.max_length,
    )


def _data_summary(train: Sequence[Example], validation: Sequence[Example], labels: Sequence[Label]) -> Event:
    counts = Counter(example.label for example in train)
    return Event(
        "message",
        f"{len(train)} training and {len(validation)} validation examples, {len(labels)} labels",
        {
            "training_examples": len(train),
            "validation_examples": len(validation),
            "labels": list(labels),
            "training_label_counts": {str(label): counts[label] for label in labels},
        },
    )


def _training_started(model: nn.Module, adapted: Sequence[str], head_modules: Sequence[str]) -> Event:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return Event(
        "message",
        f"training started: LoRA on {len(adapted)} layers, {trainable:,} of {total:,} parameters trainable",
        {
            "lora_layers": list(adapted),
            "head_modules": list(head_modules),
            "trainable_parameters": trainable,
            "total_parameters": total,
        },
    )


def _final_metrics(result: TrainResult) -> dict[str, float]:
    metrics = {"train_loss": result.train_loss, "train_seconds": result.seconds}
    if result.initial_eval is not None and result.final_eval is not None:
        metrics |= {
            "initial_val_loss": result.initial_eval.loss,
            "initial_val_accuracy": result.initial_eval.accuracy,
            "val_loss": result.final_eval.loss,
            "val_accuracy": result.final_eval.accuracy,
        }
    return metrics
