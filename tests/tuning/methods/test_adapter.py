"""Bottleneck adapters: identity at init, Houlsby/Pfeiffer placement, and only adapters train."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    DistilBertConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
)

from tests.tuning.methods.helpers import model_logits
from tuning import JobSpec, load_artifact, predict_logits
from tuning.artifacts import write_artifact
from tuning.errors import SpecError
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods.adapter.model import AdaptedProjection
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.bottleneck import Bottleneck
from tuning.task_model import TaskModel, load_classifier

MakeSpec = Callable[..., JobSpec]
TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok"]


def load(model_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)


def apply_adapter(classifier: TaskModel, **options: object) -> dict[str, AdaptedProjection]:
    spec = JobSpec.model_validate(
        {"base_model": "m", "training_file": "f", "method": {"type": "adapter", **options}}
    )
    context = MethodContext(
        classifier.tokenizer, classifier.head_modules, find_layers(classifier.model, classifier.head_modules)
    )
    apply_method(classifier.model, spec.method, context)
    return adapters(classifier.model)


def adapters(model: nn.Module) -> dict[str, AdaptedProjection]:
    return {name: module for name, module in model.named_modules() if isinstance(module, AdaptedProjection)}


def logits(classifier: TaskModel) -> torch.Tensor:
    return model_logits(classifier.model, classifier.tokenizer, TEXTS)


def test_bottleneck_is_the_identity_at_init_then_adds_its_residual() -> None:
    torch.manual_seed(0)
    block = Bottleneck(8, 3, "swish")
    hidden = torch.randn(2, 5, 8)
    assert torch.equal(block(hidden), hidden)
    assert block.down.weight.abs().sum() > 0  # only `up` starts at zero
    nn.init.normal_(block.up.weight)
    nn.init.normal_(block.up.bias)
    down = hidden @ block.down.weight.T + block.down.bias
    expected = hidden + nn.functional.silu(down) @ block.up.weight.T + block.up.bias
    torch.testing.assert_close(block(hidden), expected)


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_output_equals_the_base_at_init(model_dir: Path, placement: str, activation: str) -> None:
    classifier = load(model_dir)
    before = logits(classifier)
    wrapped = apply_adapter(classifier, placement=placement, non_linearity=activation)
    assert wrapped
    assert torch.equal(logits(classifier), before)


@pytest.mark.parametrize(
    ("model_dir_fixture", "houlsby_paths"),
    [
        ("tiny_bert_dir", ["attention.output.dense", "output.dense"]),
        ("tiny_gpt2_dir", ["attn.c_proj", "mlp.c_proj"]),
    ],
)
def test_houlsby_adapts_two_projections_per_layer_and_pfeiffer_one(
    request: pytest.FixtureRequest, model_dir_fixture: str, houlsby_paths: list[str]
) -> None:
    model_dir: Path = request.getfixturevalue(model_dir_fixture)
    houlsby = load(model_dir)
    stack = find_layers(houlsby.model, houlsby.head_modules).stack
    expected = {f"{stack}.{i}.{path}" for i in range(2) for path in houlsby_paths}
    assert set(apply_adapter(houlsby, placement="houlsby")) == expected

    pfeiffer = load(model_dir)
    assert set(apply_adapter(pfeiffer, placement="pfeiffer")) == {
        f"{stack}.{i}.{houlsby_paths[1]}" for i in range(2)
    }


def test_only_adapter_parameters_and_the_head_require_grad(model_dir: Path) -> None:
    classifier = load(model_dir)
    wrapped = apply_adapter(classifier)
    expected = {
        f"{name}.adapter.{part}.{kind}"
        for name in wrapped
        for part in ("down", "up")
        for kind in ("weight", "bias")
    }
    head = {
        name
        for name, _ in classifier.model.named_parameters()
        if name.split(".")[0] in classifier.head_modules
    }
    assert head and set(trainable_names(classifier.model)) == expected | head


@pytest.mark.parametrize(
    ("options", "width"),
    [
        ({"reduction_factor": 4}, 8),
        ({"reduction_factor": 16}, 2),
        ({"reduction_factor": 4, "bottleneck_size": 5}, 5),
    ],
)
def test_bottleneck_width_comes_from_the_reduction_factor_unless_a_size_is_given(
    tiny_bert_dir: Path, options: dict[str, int], width: int
) -> None:
    classifier = load(tiny_bert_dir)  # hidden size 32
    for wrapped in apply_adapter(classifier, **options).values():
        assert wrapped.adapter.down.weight.shape == (width, 32)
        assert wrapped.adapter.up.weight.shape == (32, width)


def tiny_configs() -> dict[str, PretrainedConfig]:
    return {
        "distilbert": DistilBertConfig(vocab_size=64, dim=32, hidden_dim=64, n_layers=2, n_heads=4),
        "llama": LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        ),
        "opt": OPTConfig(
            vocab_size=64,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
        ),
        "gpt_neox": GPTNeoXConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        ),
        "gpt2": GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4),
        "gptj": GPTJConfig(vocab_size=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4),
    }


@pytest.mark.parametrize("family", sorted(tiny_configs()))
def test_the_projection_table_covers_other_architectures(family: str) -> None:
    torch.manual_seed(0)
    config = tiny_configs()[family]
    config.pad_token_id = 0  # decoder heads find each row's last token through it
    model = AutoModelForSequenceClassification.from_config(config).eval()
    heads = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    model.requires_grad_(False)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    layers = find_layers(model, heads)
    spec = JobSpec.model_validate({"base_model": "m", "training_file": "f", "method": {"type": "adapter"}})
    applied = apply_method(model, spec.method, MethodContext(None, heads, layers))  # type: ignore[arg-type]
    assert applied.details["adapters"] == 2 * layers.count == len(adapters(model))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(4, 4)


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])


def test_an_unknown_architecture_is_refused_by_name() -> None:
    model = Unknown()
    spec = JobSpec.model_validate({"base_model": "m", "training_file": "f", "method": {"type": "adapter"}})
    with pytest.raises(SpecError) as caught:
        apply_method(model, spec.method, MethodContext(None, [], find_layers(model, [])))  # type: ignore[arg-type]
    assert caught.value.param == "method.type"
    assert "Unknown" in caught.value.message and "attn.c_proj" in caught.value.message
    assert not adapters(model)


@pytest.mark.parametrize(("base_model", "placement"), [("tiny-bert", "houlsby"), ("tiny-gpt2", "pfeiffer")])
def test_training_moves_only_adapters_and_head_and_the_artifact_reloads(
    tiny_spec: MakeSpec,
    tiny_gpt2_dir: Path,
    model_dirs: list[Path],
    sentiment_files: tuple[Path, Path],
    tmp_path: Path,
    base_model: str,
    placement: str,
) -> None:
    method = {"type": "adapter", "placement": placement, "reduction_factor": 4}
    spec = JobSpec.model_validate(tiny_spec(method).model_dump() | {"base_model": base_model})
    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    )
    model = fitted.job.model

    # Every pretrained tensor, found under its wrapped name, is bit-identical to the checkpoint's.
    pretrained = load(model_dirs[0] / base_model).model.state_dict()
    trained = {name.replace(".base_layer.", "."): value for name, value in model.state_dict().items()}
    shared = fitted.job.pretrained
    assert shared and all(torch.equal(trained[name], pretrained[name]) for name in shared)
    # The adapters did train: every `up` moved off zero.
    assert all(wrapped.adapter.up.weight.abs().sum() > 0 for wrapped in adapters(model).values())
    # The tiny random encoder barely mixes tokens, so accuracy is no signal here (the learning test on
    # MiniLM is); the loss still has to fall.
    assert fitted.job.metrics["val_loss"] < fitted.job.metrics["initial_val_loss"]

    files = write_artifact(tmp_path, fitted.job)
    with safe_open(str(tmp_path / "delta.safetensors"), framework="pt") as stored:
        keys = set(stored.keys())
    head = {name for name in keys if name.split(".")[0] in fitted.job.head_modules}
    assert keys == set(trainable_names(model)) and all(".adapter." in name for name in keys - head)
    assert "tokenizer/tokenizer.json" not in files

    loaded = load_artifact(tmp_path, model_dirs, device=torch.device("cpu"))
    expected = model_logits(model, fitted.job.tokenizer, TEXTS)
    torch.testing.assert_close(predict_logits(loaded, TEXTS), expected, atol=1e-5, rtol=0)
