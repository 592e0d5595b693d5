"""The dry run's estimate: parameter counts from safetensors headers and trainable counts per method
agree with the models tuning actually builds; steps agree with the trainer's own count."""

import math
from pathlib import Path
from typing import Any

import pytest
from transformers import BertModel

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning.build import apply_spec_method, prepare_classifier
from tuning.estimate import count_parameters, estimate_job, trainable_parameters
from tuning.events import Event
from tuning.fit import fit
from tuning.methods import METHODS
from tuning.models import tensor_shapes
from tuning.spec import JobSpec
from tuning.validation import validate_files


def spec_with(method: dict[str, Any], **hyperparameters: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-t",
            "method": method,
            "hyperparameters": hyperparameters,
        }
    )


def test_count_parameters_reads_the_header_without_loading(tiny_bert_dir: Path) -> None:
    loaded = BertModel.from_pretrained(tiny_bert_dir)
    assert count_parameters(tiny_bert_dir) == sum(p.numel() for p in loaded.parameters()) == 999_072


# Every registered method with its catalogue example, and variants whose count is computed otherwise.
ESTIMATED = [{"type": name, **entry.example} for name, entry in METHODS.items()] + [
    {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
    {"type": "prompt_tuning", "num_virtual_tokens": 5},
    {"type": "prefix_tuning", "num_virtual_tokens": 5},
    {"type": "partial", "last_n_layers": 1},
    {"type": "partial", "modules": ["*.attention.*"]},
]


@pytest.mark.parametrize("method", ESTIMATED, ids=lambda method: f"{method['type']}-{len(method)}")
def test_trainable_parameters_match_the_built_model(tiny_bert_dir: Path, method: dict[str, Any]) -> None:
    spec = spec_with(method)
    classifier = prepare_classifier(spec, tiny_bert_dir, ["negative", "positive"])
    apply_spec_method(spec, classifier)
    head = {
        id(p) for name in classifier.head_modules for p in classifier.model.get_submodule(name).parameters()
    }
    built = sum(p.numel() for p in classifier.model.parameters() if p.requires_grad and id(p) not in head)
    config = {"hidden_size": 32, "num_hidden_layers": 2}
    assert trainable_parameters(spec, tensor_shapes(tiny_bert_dir), config) == built


def test_steps_and_tokens_match_the_trainer(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    spec = spec_with({"type": "bitfit"}, epochs=2, batch_size=4, logging_steps=1)
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    estimate = estimate_job(spec, tiny_bert_dir, report, flops_per_second=1e11)
    events: list[Event] = []
    fit(spec, training_path=training, model_dirs=[tiny_bert_dir.parent], on_event=events.append)
    total_steps = {e.data["total_steps"] for e in events if e.type == "metrics"}
    assert estimate.steps == 2 * math.ceil(10 / 4) == 6
    assert total_steps == {estimate.steps}
    assert estimate.tokens == 2 * report["files"]["training_file"]["trained_tokens"]


def test_time_and_memory_follow_the_documented_formula(tiny_bert_dir: Path) -> None:
    spec = spec_with({"type": "bitfit"}, epochs=3, batch_size=8, max_seq_length=16)
    validation = {"examples": 4, "trained_tokens": 40, "tokens": {"min": 10, "mean": 10, "max": 10}}
    training = {"examples": 20, "trained_tokens": 200, "tokens": {"min": 5, "mean": 10, "max": 30}}
    report = {"files": {"training_file": training, "validation_file": validation}}
    estimate = estimate_job(spec, tiny_bert_dir, report, flops_per_second=1e9)
    parameters, trainable = 999_072, 640
    assert (estimate.steps, estimate.tokens) == (3 * 3, 600)
    evaluations = 1 + 3  # before the first step, then each epoch's end
    seconds = ((4 * parameters + 2 * trainable) * 600 + evaluations * 2 * parameters * 40) / 1e9
    assert estimate.seconds == pytest.approx(seconds, abs=1e-3)
    # seq = the longest example cut to max_seq_length: 16; tiny BERT is 2 layers, 32 wide, 4 heads.
    activations = 2 * 2 * 16 * 8 * 32 * (34 + 5 * 4 * 16 / 32)
    assert estimate.peak_memory_bytes == 4 * parameters + 12 * trainable + int(activations)
    assert "Korthikanti" in estimate.method and "6·P" in estimate.method


def test_packing_counts_packed_sequences(tiny_bert_dir: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-t",
            "task": "causal_lm",
            "data": {"packing": True},
            "hyperparameters": {"epochs": 1, "batch_size": 2, "max_seq_length": 16},
        }
    )
    report = {"files": {"training_file": {"examples": 10, "trained_tokens": 100, "tokens": {"max": 10}}}}
    estimate = estimate_job(spec, tiny_bert_dir, report, flops_per_second=1e9)
    assert estimate.steps == math.ceil(math.ceil(100 / 16) / 2) == 4
