"""Config-only checks refuse what the base model cannot do, and agree with the worker's own checks."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuning.compat import check_spec_for_model, read_config
from tuning.errors import SpecError
from tuning.layers import find_layers
from tuning.methods.base_model import ModelConfig
from tuning.methods.partial.model import last_layers
from tuning.spec import JobSpec
from tuning.task_model import load_classifier

BERT_LIKE = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 64}  # fmt: skip
GPT2_LIKE = {"model_type": "gpt2", "n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64}
DISTILBERT_LIKE = {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 4}
# A model family without attention: a state-space model's config names layers and width, never heads.
NO_ATTENTION = {"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2}


def model_dir(tmp_path: Path, config: Any) -> Path:
    tmp_path.joinpath("config.json").write_text(json.dumps(config))
    return tmp_path


def spec(method: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({"base_model": "m", "training_file": "file-train", "method": method})


def refusal(tmp_path: Path, config: Any, method: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        check_spec_for_model(spec(method), model_dir(tmp_path, config))
    return caught.value


@pytest.mark.parametrize("config", [BERT_LIKE, GPT2_LIKE, DISTILBERT_LIKE])
def test_prefix_tuning_fits_every_attention_family(tmp_path: Path, config: dict[str, Any]) -> None:
    assert ModelConfig("m", config).has_attention
    check_spec_for_model(spec({"type": "prefix_tuning"}), model_dir(tmp_path, config))


def test_prefix_tuning_needs_attention_heads(tmp_path: Path) -> None:
    error = refusal(tmp_path, NO_ATTENTION, {"type": "prefix_tuning"})
    assert error.param == "method.type" and "mamba" in error.message and "attention" in error.message
    # Every other method trains this model: the refusal is about prefixes, not the model.
    check_spec_for_model(spec({"type": "prompt_tuning"}), tmp_path)


def test_heads_given_as_a_boolean_are_not_heads(tmp_path: Path) -> None:
    config = NO_ATTENTION | {"num_attention_heads": True}
    assert refusal(tmp_path, config, {"type": "prefix_tuning"}).param == "method.type"


@pytest.mark.parametrize(("virtual", "refused"), [(63, False), (64, True), (100, True)])
def test_prompt_tuning_leaves_room_for_text(tmp_path: Path, virtual: int, refused: bool) -> None:
    method = {"type": "prompt_tuning", "num_virtual_tokens": virtual}
    if refused:
        error = refusal(tmp_path, BERT_LIKE, method)
        assert error.param == "method.num_virtual_tokens" and "64 positions" in error.message
    else:
        check_spec_for_model(spec(method), model_dir(tmp_path, BERT_LIKE))


@pytest.mark.parametrize("config", [BERT_LIKE, GPT2_LIKE])
def test_last_n_layers_counts_the_models_layers(tmp_path: Path, config: dict[str, Any]) -> None:
    layers = next(config[key] for key in ("num_hidden_layers", "n_layer") if key in config)
    check_spec_for_model(spec({"type": "partial", "last_n_layers": layers}), model_dir(tmp_path, config))
    error = refusal(tmp_path, config, {"type": "partial", "last_n_layers": layers + 1})
    assert error.param == "method.last_n_layers" and f"has {layers} transformer layers" in error.message


def test_layers_to_transform_must_name_existing_layers(tmp_path: Path) -> None:
    lora = {"type": "lora", "layers_to_transform": [0, 2]}
    check_spec_for_model(spec(lora), model_dir(tmp_path, GPT2_LIKE))
    error = refusal(tmp_path, GPT2_LIKE, lora | {"layers_to_transform": [1, 3, 5, 3]})
    assert error.param == "method.layers_to_transform"
    assert "[3, 5]" in error.message and "0 to 2" in error.message


@pytest.mark.parametrize(
    "method",
    [
        {"type": "partial", "last_n_layers": 99},
        {"type": "lora", "layers_to_transform": [99]},
        {"type": "prompt_tuning", "num_virtual_tokens": 512},
    ],
)
def test_sizes_the_config_does_not_state_are_left_to_the_worker(
    tmp_path: Path, method: dict[str, Any]
) -> None:
    check_spec_for_model(spec(method), model_dir(tmp_path, {"model_type": "custom"}))


@pytest.mark.parametrize("content", ["not json", "[1, 2]", None])
def test_a_config_that_cannot_be_read_names_the_base_model(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        tmp_path.joinpath("config.json").write_text(content)
    with pytest.raises(SpecError) as caught:
        read_config(tmp_path)
    assert caught.value.param == "base_model" and "config.json" in caught.value.message


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_gpt2_dir"])
def test_config_check_agrees_with_the_loaded_models_layers(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    # The config says how many layers there are; the worker finds them in the real modules. A job the
    # API accepts must not fail in the worker over the same question, and the other way round.
    path: Path = request.getfixturevalue(fixture)
    classifier = load_classifier(path, ["negative", "positive"], max_seq_length=32)
    heads = classifier.head_modules
    layers = find_layers(classifier.model, heads)
    for n in (layers.count, layers.count + 1):
        config_refuses = _refuses(check_spec_for_model, spec({"type": "partial", "last_n_layers": n}), path)
        worker_refuses = _refuses(last_layers, layers, n, heads)
        assert config_refuses == worker_refuses == (n > layers.count)


def _refuses(check: Callable[..., object], *args: Any) -> bool:
    try:
        check(*args)
    except SpecError:
        return True
    return False


def named_spec(base: str, method: dict[str, Any], task: str = "sequence_classification") -> JobSpec:
    return JobSpec.model_validate(
        {"base_model": base, "training_file": "file-train", "task": task, "method": method}
    )


@pytest.mark.parametrize("method_type", ["lora", "delta"])
def test_target_modules_that_match_no_layer_are_refused_naming_them_and_real_ones(
    tiny_bert_dir: Path, method_type: str
) -> None:
    method = {"type": method_type, "target_modules": ["query", "nonexistent", "vaule"]}
    with pytest.raises(SpecError) as caught:
        check_spec_for_model(named_spec("tiny-bert", method), tiny_bert_dir)
    error = caught.value
    assert error.param == "method.target_modules"
    assert "['nonexistent', 'vaule']" in error.message and "'query'" not in error.message
    assert "query" in error.message and "value" in error.message  # names that exist


@pytest.mark.parametrize(
    "targets",
    [
        ["query", "value"],
        ["attention.self.query"],  # a dotted suffix
        ["bert.encoder.layer.0.attention.self.query"],  # the task model's full name, with its prefix
        ["encoder.layer.1.output.dense"],
    ],
)
def test_target_modules_that_name_layers_pass(tiny_bert_dir: Path, targets: list[str]) -> None:
    check_spec_for_model(named_spec("tiny-bert", {"type": "lora", "target_modules": targets}), tiny_bert_dir)


def test_gpt2_conv1d_c_attn_passes_and_bert_names_do_not(tiny_gpt2_dir: Path) -> None:
    lora = {"type": "lora", "target_modules": ["c_attn"]}
    check_spec_for_model(named_spec("tiny-gpt2", lora, task="causal_lm"), tiny_gpt2_dir)
    check_spec_for_model(
        named_spec("tiny-gpt2", {"type": "delta", "target_modules": ["c_attn", "c_fc"]}, "causal_lm"),
        tiny_gpt2_dir,
    )
    with pytest.raises(SpecError, match="c_attn") as caught:
        check_spec_for_model(named_spec("tiny-gpt2", {"type": "lora"}, task="causal_lm"), tiny_gpt2_dir)
    assert caught.value.param == "method.target_modules"  # LoRA's default targets BERT's query/value


def test_rank_pattern_keys_and_layers_to_transform_are_checked_too(tiny_bert_dir: Path) -> None:
    ranks = {"type": "lora", "target_modules": ["query"], "rank_pattern": {"query": 2, "qurey": 4}}
    with pytest.raises(SpecError, match="qurey") as caught:
        check_spec_for_model(named_spec("tiny-bert", ranks), tiny_bert_dir)
    assert caught.value.param == "method.rank_pattern"
    # Layer 1 exists, and only layer 0's query is named: nothing to adapt in layer 1.
    only_layer_0 = {
        "type": "lora",
        "target_modules": ["encoder.layer.0.attention.self.query"],
        "layers_to_transform": [1],
    }
    with pytest.raises(SpecError, match=r"in layers \[1\]") as caught:
        check_spec_for_model(named_spec("tiny-bert", only_layer_0), tiny_bert_dir)
    assert caught.value.param == "method.target_modules"


def test_a_model_without_safetensors_leaves_targets_to_the_worker(tmp_path: Path) -> None:
    method = {"type": "lora", "target_modules": ["nonexistent"]}
    check_spec_for_model(spec(method), model_dir(tmp_path, BERT_LIKE))
