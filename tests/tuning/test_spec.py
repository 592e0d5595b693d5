"""The job spec refuses what cannot work, naming the part at fault, and accepts what composes."""

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from tuning.spec import (
    ADDITIVE_METHODS,
    MERGEABLE_METHODS,
    METHOD_MODELS,
    PEFT_METHODS,
    CompositionError,
    JobSpec,
    Method,
)

L2SP = {"l2sp": {"weight": 0.01}}
EWC = {"ewc": {"weight": 10.0, "fisher_file": "file-source"}}
KL = {"kl": {"weight": 0.1, "temperature": 2.0}}
HEAD_ONLY = {"type": "partial", "head_only": True}


def spec(**parts: Any) -> JobSpec:
    return JobSpec.model_validate({"base_model": "tiny-bert", "training_file": "file-train", **parts})


def composition_error(**parts: Any) -> CompositionError:
    with pytest.raises(ValidationError) as caught:
        spec(**parts)
    (error,) = caught.value.errors()
    reason = (error.get("ctx") or {}).get("error")
    assert isinstance(reason, CompositionError), error
    return reason


def method_names() -> set[str]:
    union = get_args(get_args(Method)[0])
    return {model.model_fields["type"].default for model in union}


@pytest.mark.parametrize(
    ("resources", "param"),
    [
        ({"processes": 2}, "resources.processes"),
        ({"max_examples_per_device": 4}, "resources.max_examples_per_device"),
    ],
)
def test_a_kl_penalty_on_whole_batches_is_refused_when_batches_are_split(
    resources: dict[str, Any], param: str
) -> None:
    error = composition_error(regularizers=KL, resources=resources)
    assert error.param == param and "one pass" in str(error)


def test_a_growing_trainable_set_runs_in_one_process() -> None:
    unfreeze = {"gradual_unfreeze": {"every": 1}, "method": {"type": "full"}}
    error = composition_error(**unfreeze, resources={"processes": 2})
    assert error.param == "resources.processes" and "gradual_unfreeze" in str(error)
    assert spec(**unfreeze, resources={"max_examples_per_device": 4})  # passes keep DDP out of it


@pytest.mark.parametrize("method", sorted(ADDITIVE_METHODS))
@pytest.mark.parametrize(("regularizer", "options"), [("l2sp", L2SP), ("ewc", EWC)])
def test_a_pull_toward_pretrained_weights_needs_a_method_that_changes_them(
    method: str, regularizer: str, options: dict[str, Any]
) -> None:
    error = composition_error(method={"type": method}, regularizers=options)
    assert error.param == f"regularizers.{regularizer}"
    assert method in str(error) and "changes no pretrained weight" in str(error)


@pytest.mark.parametrize("options", [L2SP, EWC])
def test_a_linear_probe_changes_no_pretrained_weight_either(options: dict[str, Any]) -> None:
    error = composition_error(method=HEAD_ONLY, regularizers=options)
    assert error.param == f"regularizers.{next(iter(options))}"


@pytest.mark.parametrize("method", [{"type": "prompt_tuning"}, {"type": "prefix_tuning"}, HEAD_ONLY])
def test_gradual_unfreeze_needs_layers_to_unfreeze(method: dict[str, Any]) -> None:
    error = composition_error(method=method, gradual_unfreeze={"every": 1})
    assert error.param == "gradual_unfreeze" and "unfreeze" in str(error)


@pytest.mark.parametrize("method", sorted(method_names() - MERGEABLE_METHODS))
def test_merged_export_needs_a_mergeable_method(method: str) -> None:
    error = composition_error(method={"type": method}, export={"merged": True})
    assert error.param == "export.merged" and method in str(error)


def test_merged_export_needs_a_linear_head() -> None:
    error = composition_error(method={"type": "full"}, head={"type": "mlp"}, export={"merged": True})
    assert error.param == "export.merged" and "linear head" in str(error)


@pytest.mark.parametrize("method", sorted(method_names() - {"delta"}))
@pytest.mark.parametrize("export", [{"lora_rank": 4}, {"lora_energy": 0.9}])
def test_compression_to_lora_is_for_delta_jobs(method: str, export: dict[str, Any]) -> None:
    options = HEAD_ONLY if method == "partial" else {"type": method}
    error = composition_error(method=options, export=export)
    assert error.param == "export" and "delta" in str(error)


@pytest.mark.parametrize(
    "parts",
    [
        {
            "method": {"type": "full"},
            "layer_lr_decay": {"decay": 0.8},
            "gradual_unfreeze": {"every": 2, "unit": "steps"},
            "regularizers": L2SP | KL | EWC,
            "export": {"merged": True},
        },
        {"method": {"type": "lora"}, "regularizers": KL | L2SP},
        {"method": {"type": "adapter", "placement": "pfeiffer"}, "regularizers": KL},
        {"method": {"type": "prompt_tuning"}, "regularizers": KL, "layer_lr_decay": {"decay": 0.9}},
        {"method": HEAD_ONLY, "regularizers": KL, "head": {"type": "mlp", "hidden_size": 16}},
        {"method": {"type": "delta"}, "export": {"lora_energy": 0.95, "merged": True}},
        {"method": {"type": "partial", "last_n_layers": 1}, "gradual_unfreeze": {}, "regularizers": EWC},
        {"method": {"type": "bitfit"}, "regularizers": L2SP, "export": {"merged": True}},
    ],
)
def test_combinations_that_work_are_accepted_and_survive_a_round_trip(parts: dict[str, Any]) -> None:
    accepted = spec(**parts)
    # The stored JSON column is read back with the same model: it must validate to the same spec.
    assert JobSpec.model_validate(accepted.model_dump(mode="json")) == accepted


@pytest.mark.parametrize(
    ("parts", "loc", "words"),
    [
        ({"method": {"type": "partial"}}, ("method", "partial"), "exactly one"),
        (
            {"method": {"type": "partial", "last_n_layers": 2, "head_only": True}},
            ("method", "partial"),
            "exactly one",
        ),
        ({"method": {"type": "prompt_tuning", "init": "text"}}, ("method", "prompt_tuning"), "init_text"),
        ({"method": {"type": "prompt_tuning", "init_text": "hi"}}, ("method", "prompt_tuning"), "init_text"),
        ({"export": {"lora_rank": 4, "lora_energy": 0.9}}, ("export",), "not both"),
        ({"head": {"type": "linear", "hidden_size": 8}}, ("head",), "mlp"),
        (
            {"method": {"type": "lora", "rank_pattern": {"value": 0}}},
            ("method", "lora", "rank_pattern"),
            "rank",
        ),
        (
            {"method": {"type": "lora", "layers_to_transform": [-1]}},
            ("method", "lora", "layers_to_transform"),
            "0",
        ),
        (
            {"method": {"type": "input_adapter", "new_tokens": ["x", "x"]}},
            ("method", "input_adapter", "new_tokens"),
            "repeat",
        ),
        (
            {"method": {"type": "delta", "target_modules": [" "]}},
            ("method", "delta", "target_modules"),
            "blank",
        ),
    ],
)
def test_options_that_cannot_work_alone_are_refused_where_they_are(
    parts: dict[str, Any], loc: tuple[str, ...], words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**parts)
    (error,) = caught.value.errors()
    assert error["loc"] == loc and words in error["msg"]


def test_unknown_fields_are_refused_not_ignored() -> None:
    with pytest.raises(ValidationError) as caught:
        spec(regularizers={"l3": {"weight": 1.0}})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("parts", "peft"),
    [
        ({"method": {"type": "lora"}}, True),
        ({"method": {"type": "prompt_tuning"}}, True),
        ({"method": {"type": "prefix_tuning"}}, True),
        ({"method": {"type": "lora"}, "head": {"type": "mlp"}}, False),
        ({"method": {"type": "delta"}}, False),
        ({"method": {"type": "adapter"}}, False),
    ],
)
def test_peft_layout_needs_a_peft_method_and_a_linear_head(parts: dict[str, Any], peft: bool) -> None:
    assert spec(**parts).peft_layout is peft


def test_method_sets_name_only_methods_of_the_union() -> None:
    names = method_names()
    assert names == {model.model_fields["type"].default for model in METHOD_MODELS}
    assert (ADDITIVE_METHODS | MERGEABLE_METHODS | PEFT_METHODS).issubset(names)
    # An additive method leaves the pretrained weights alone, so there is nothing to merge into them.
    assert not ADDITIVE_METHODS & MERGEABLE_METHODS
