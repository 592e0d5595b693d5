"""The dry run's estimate: parameter counts from safetensors headers and trainable counts per method
agree with the models tuning actually builds; steps agree with the trainer's own count."""

import json
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
from tuning.spec import HeadSpec, JobSpec
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


HEADS = [{"type": "linear"}, {"type": "mlp", "hidden_size": 16}]
GPT2_TARGETS = {"lora": {"target_modules": ["c_attn"]}, "delta": {"target_modules": ["c_attn", "c_fc"]}}


@pytest.mark.parametrize("head", HEADS, ids=lambda head: str(head["type"]))
@pytest.mark.parametrize("labels", [2, 5])
@pytest.mark.parametrize("method", ESTIMATED, ids=lambda method: f"{method['type']}-{len(method)}")
@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_the_estimate_counts_what_the_job_trains(
    request: pytest.FixtureRequest, family: str, method: dict[str, Any], labels: int, head: dict[str, Any]
) -> None:
    """The dry run's trainable count is the built job's, the new head included, for every method."""
    if family == "gpt2":
        if "target_modules" in method or "modules" in method:
            pytest.skip("BERT module names")
        method = method | GPT2_TARGETS.get(method["type"], {})
    model_dir: Path = request.getfixturevalue(f"tiny_{family}_dir")
    spec = spec_with(method).model_copy(update={"head": HeadSpec.model_validate(head)})
    classifier = prepare_classifier(spec, model_dir, [f"label{i}" for i in range(labels)])
    apply_spec_method(spec, classifier)
    built = sum(p.numel() for p in classifier.model.parameters() if p.requires_grad)
    config = json.loads((model_dir / "config.json").read_text())
    assert trainable_parameters(spec, tensor_shapes(model_dir), config, outputs=labels) == built


def test_the_dry_run_counts_the_head_as_the_job_does(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    spec = spec_with({"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    events: list[Event] = []
    fit(spec, training_path=training, model_dirs=[tiny_bert_dir.parent], on_event=events.append)
    counted = next(e.data["trainable_parameters"] for e in events if "trainable_parameters" in e.data)
    estimate = estimate_job(spec, tiny_bert_dir, report, flops_per_second=1e9)
    assert estimate.trainable_parameters == counted == 1_024 + 32 * 2 + 2


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
    training = {
        "format": "classification",
        "examples": 20,
        "trained_tokens": 200,
        "tokens": {"min": 5, "mean": 10, "max": 30},
        "labels": {"negative": 10, "positive": 10},
    }
    report = {"files": {"training_file": training, "validation_file": validation}}
    estimate = estimate_job(spec, tiny_bert_dir, report, flops_per_second=1e9)
    parameters, trainable = 999_072, 640 + 32 * 2 + 2  # the biases, and the head for 2 labels
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
