"""The shared matrix: every method of the catalogue, and a few compositions, on a tiny BERT-like
encoder and a tiny GPT-2-like decoder.

For each case: the forward runs; exactly the expected parameters require grad; every other tensor
is bit-identical after training; the output is unchanged at init where the method promises it; the
artifact reloads (`tuning.load_artifact`) to the same outputs; a merged export (where allowed) loads
in plain transformers to the same outputs.

Expectations are stated without the methods' internal names: a tensor is "pretrained" when it is the
very tensor the checkpoint loaded (the method may have re-parented it, never copied it).
"""

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from tuning import JobSpec, load_artifact, predict_logits
from tuning.artifacts import write_artifact
from tuning.batching import batches_in_order, encode
from tuning.build import apply_spec_method, prepare_classifier
from tuning.data import read_classification_file
from tuning.evaluate import classifier_logits
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods import METHODS
from tuning.models import resolve_base_model
from tuning.task_model import TaskModel
from tuning.train import seed_everything

Rule = Callable[[str, bool, "Case", TaskModel], bool]  # (name, is pretrained, case, classifier) -> trains?


def _everything(name: str, pretrained: bool, case: "Case", classifier: TaskModel) -> bool:
    return True


def _added_only(name: str, pretrained: bool, case: "Case", classifier: TaskModel) -> bool:
    return not pretrained


def _biases(name: str, pretrained: bool, case: "Case", classifier: TaskModel) -> bool:
    return name.endswith("bias")


def _last_layer(name: str, pretrained: bool, case: "Case", classifier: TaskModel) -> bool:
    # "The last N layers" trains everything above the cut, what runs after the stack too (pooler, ln_f).
    layers = find_layers(classifier.model, classifier.head_modules)
    return layers.depth(name) >= layers.count


def _attention(name: str, pretrained: bool, case: "Case", classifier: TaskModel) -> bool:
    return fnmatch.fnmatch(name.rpartition(".")[0], case.method["modules"][0])


@dataclass(frozen=True)
class Case:
    id: str
    model: str  # "tiny-bert" or "tiny-gpt2"
    method: dict[str, Any]
    trains: Rule  # besides the head, which always trains
    identity_at_init: bool
    parts: dict[str, Any] | None = None  # other JobSpec fields: head, regularizers, export, ...


LORA_TARGETS = {"tiny-bert": ["query", "value"], "tiny-gpt2": ["c_attn"]}
ATTENTION_MODULES = {"tiny-bert": "*.attention.*", "tiny-gpt2": "*.attn.*"}


# Each registered method's cases on one model: what trains besides the head, whether the output is
# the base's at init, and the parts (a merged export where the method allows one).
MethodCases = Callable[[str], list[Case]]
MATRIX: dict[str, MethodCases] = {
    "full": lambda model: [
        Case(f"full-{model}", model, {"type": "full"}, _everything, True, {"export": {"merged": True}})
    ],
    "partial": lambda model: [
        Case(f"partial-last-{model}", model, {"type": "partial", "last_n_layers": 1}, _last_layer, True),
        Case(
            f"partial-modules-{model}",
            model,
            {"type": "partial", "modules": [ATTENTION_MODULES[model]]},
            _attention,
            True,
        ),
        Case(f"partial-probe-{model}", model, {"type": "partial", "head_only": True}, _added_only, True),
    ],
    "bitfit": lambda model: [
        Case(f"bitfit-{model}", model, {"type": "bitfit"}, _biases, True, {"export": {"merged": True}})
    ],
    "adapter": lambda model: [
        Case(
            f"adapter-houlsby-{model}", model, {"type": "adapter", "reduction_factor": 4}, _added_only, True
        ),
        Case(
            f"adapter-pfeiffer-{model}",
            model,
            {"type": "adapter", "placement": "pfeiffer", "bottleneck_size": 4},
            _added_only,
            True,
        ),
    ],
    "input_adapter": lambda model: [
        Case(
            f"input-adapter-{model}",
            model,
            {"type": "input_adapter", "new_tokens": ["greatish", "awfulness"]},
            _added_only,
            True,
        )
    ],
    "delta": lambda model: [
        Case(f"delta-{model}", model, {"type": "delta"}, _added_only, True, {"export": {"merged": True}})
    ],
    "prompt_tuning": lambda model: [
        Case(f"prompt-{model}", model, {"type": "prompt_tuning", "num_virtual_tokens": 4}, _added_only, False)
    ],
    "prefix_tuning": lambda model: [
        Case(
            f"prefix-{model}",
            model,
            {"type": "prefix_tuning", "num_virtual_tokens": 4, "projection": True},
            _added_only,
            False,
        )
    ],
    "lora": lambda model: [
        Case(
            f"lora-{model}",
            model,
            {"type": "lora", "r": 4, "target_modules": LORA_TARGETS[model]},
            _added_only,
            True,
            {"export": {"merged": True}},
        )
    ],
}


def method_cases(model: str) -> list[Case]:
    """Every registered method's cases, in the registry's order (a method without any fails below)."""
    return [case for name in METHODS for case in MATRIX.get(name, lambda _: [])(model)]


COMPOSITIONS = [
    Case(
        "full+llrd+unfreeze+l2sp+kl",
        "tiny-bert",
        {"type": "full"},
        _everything,
        True,
        {
            "layer_lr_decay": {"decay": 0.5},
            "gradual_unfreeze": {"every": 2, "unit": "steps"},
            "regularizers": {"l2sp": {"weight": 0.1, "new_weight": 0.01}, "kl": {"weight": 0.5}},
        },
    ),
    Case(
        "lora+kl+mlp-head",
        "tiny-bert",
        {"type": "lora", "r": 4, "target_modules": ["query", "value"], "use_rslora": True},
        _added_only,
        True,
        {
            "head": {"type": "mlp", "hidden_size": 16},
            "regularizers": {"kl": {"weight": 1.0, "temperature": 2.0}},
        },
    ),
    Case(
        "delta+l2sp+merged+svd",
        "tiny-bert",
        {"type": "delta", "target_modules": ["query", "value"]},
        _added_only,
        True,
        {"regularizers": {"l2sp": {"weight": 0.1}}, "export": {"merged": True, "lora_rank": 2}},
    ),
    Case(
        "adapter+unfreeze+llrd",
        "tiny-gpt2",
        {"type": "adapter", "reduction_factor": 4},
        _added_only,
        True,
        {"layer_lr_decay": {"decay": 0.7}, "gradual_unfreeze": {"every": 1, "unit": "steps"}},
    ),
    Case(
        "prompt+mlp-head",
        "tiny-bert",
        {"type": "prompt_tuning", "num_virtual_tokens": 3},
        _added_only,
        False,
        {"head": {"type": "mlp"}},
    ),
]

CASES = method_cases("tiny-bert") + method_cases("tiny-gpt2") + COMPOSITIONS


MAX_LENGTH = 32


def test_the_matrix_covers_every_registered_method() -> None:
    assert set(MATRIX) == set(METHODS)
    for model in ("tiny-bert", "tiny-gpt2"):
        assert {case.method["type"] for case in method_cases(model)} == set(METHODS)


def make_spec(case: Case) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": case.model,
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": case.method,
            "hyperparameters": {
                "epochs": 1,
                "batch_size": 8,
                "learning_rate": 5e-2,
                "warmup_ratio": 0.0,
                "max_seq_length": MAX_LENGTH,
                "seed": 5,
            },
            **(case.parts or {}),
        }
    )


@pytest.fixture(scope="module")
def matrix_models(tiny_bert_dir: Path, tiny_gpt2_dir: Path) -> list[Path]:
    return [tiny_bert_dir.parent]


@pytest.fixture(scope="module")
def probe_texts(sentiment_files: tuple[Path, Path]) -> list[str]:
    texts = [example.text for example in read_classification_file(sentiment_files[1])][:6]
    return texts + ["so greatish it was", "pure awfulness"]  # the input adapter's new tokens


def logits_of(model: nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    model.eval()
    encoded = encode(tokenizer, texts, None, max_length=MAX_LENGTH)
    with torch.no_grad():
        return torch.cat(
            [classifier_logits(model, b, torch.device("cpu")) for b in batches_in_order(encoded, 4)]
        )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_method_matrix(
    case: Case,
    matrix_models: list[Path],
    sentiment_files: tuple[Path, Path],
    probe_texts: list[str],
    tmp_path: Path,
) -> None:
    spec = make_spec(case)
    labels = ["negative", "positive"]
    base_path = resolve_base_model(case.model, matrix_models)

    # Built exactly as a job builds it (same seed), but kept untrained for comparison.
    seed_everything(spec.hyperparameters.seed)
    fresh = prepare_classifier(spec, base_path, labels)
    model: nn.Module = fresh.model
    pretrained_tensors = {id(p) for n, p in model.named_parameters() if n in fresh.pretrained}
    before = logits_of(model, fresh.tokenizer, probe_texts[:6])
    apply_spec_method(spec, fresh)
    at_init = logits_of(model, fresh.tokenizer, probe_texts[:6])
    assert at_init.shape == (6, 2) and torch.isfinite(at_init).all()
    if case.identity_at_init:
        torch.testing.assert_close(at_init, before, rtol=0, atol=1e-6)

    heads = tuple(fresh.head_modules)
    expected = {
        name
        for name, parameter in model.named_parameters()
        if name.startswith(tuple(f"{head}." for head in heads))
        or case.trains(name, id(parameter) in pretrained_tensors, case, fresh)
    }
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == expected
    head_names = {name for name in trainable if name.startswith(tuple(f"{head}." for head in heads))}
    method_names = trainable - head_names
    linear_probe = case.method.get("head_only", False)
    assert bool(method_names) != linear_probe, (
        "the method trains something besides the head (a probe does not)"
    )

    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=matrix_models
    )
    trained = dict(fitted.job.model.named_parameters())
    untrained = dict(model.named_parameters())
    assert trained.keys() == untrained.keys()
    for name, parameter in untrained.items():
        if name not in expected:
            assert torch.equal(trained[name], parameter), f"{name} changed but does not train"
    changed = {name for name in method_names | head_names if not torch.equal(trained[name], untrained[name])}
    assert changed & head_names, "the head did not train"
    assert bool(changed & method_names) != linear_probe, "training changed none of the method's tensors"

    out = tmp_path / "artifact"
    files = write_artifact(out, fitted.job)
    ours = predict_logits(load_artifact(out, matrix_models, device=torch.device("cpu")), probe_texts)
    reference = logits_of(fitted.job.model, fitted.job.tokenizer, probe_texts)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    if spec.export.merged:
        assert "merged/config.json" in files
        merged = AutoModelForSequenceClassification.from_pretrained(out / "merged").eval()
        encoded = fitted.job.tokenizer(
            probe_texts[:6], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        with torch.no_grad():
            plain = merged(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        torch.testing.assert_close(plain, reference[:6], rtol=0, atol=1e-5)
