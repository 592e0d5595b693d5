"""The task head: the model class's own linear head, or an MLP in place of its logits layer."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tuning import JobSpec, SpecError, load_artifact, predict_logits
from tuning.artifacts import write_artifact
from tuning.artifacts.load import LoadedArtifact
from tuning.data import read_classification_file
from tuning.fit import fit
from tuning.parts.head import build_head
from tuning.spec import HeadSpec
from tuning.task_model import TaskModel, load_classifier

MakeSpec = Callable[..., JobSpec]
LABELS = ["negative", "neutral", "positive"]


def classifier(model_dir: Path, seed: int = 0) -> TaskModel:
    torch.manual_seed(seed)
    return load_classifier(model_dir, LABELS, max_seq_length=32)


def logits(built: TaskModel) -> torch.Tensor:
    inputs = built.tokenizer(
        ["a wonderful movie", "the plot was awful and boring"], padding=True, return_tensors="pt"
    )
    return built.model(**inputs).logits


def test_a_linear_head_is_the_model_class_own(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    original = built.model.classifier
    assert build_head(built.model, built.head_modules, HeadSpec(), len(LABELS)) == ["classifier"]
    assert built.model.classifier is original


@pytest.mark.parametrize(
    ("model_fixture", "logits_layer", "bias"),
    [("tiny_bert_dir", "classifier", True), ("tiny_gpt2_dir", "score", False)],
)
def test_an_mlp_replaces_the_logits_layer(
    model_fixture: str, logits_layer: str, bias: bool, request: pytest.FixtureRequest
) -> None:
    built = classifier(request.getfixturevalue(model_fixture))
    spec = HeadSpec(type="mlp", hidden_size=12, activation="tanh", dropout=0.2)
    names = build_head(built.model, built.head_modules, spec, len(LABELS))
    assert names == built.head_modules == [logits_layer]
    mlp = built.model.get_submodule(logits_layer)
    assert isinstance(mlp, nn.Sequential)
    kinds = [type(module) for module in mlp]
    assert kinds == [nn.Dropout, nn.Linear, nn.Tanh, nn.Dropout, nn.Linear]
    assert (mlp[0].p, mlp[3].p) == (0.2, 0.2)
    assert (mlp[1].in_features, mlp[1].out_features) == (32, 12)
    assert (mlp[4].in_features, mlp[4].out_features) == (12, len(LABELS))
    assert (mlp[4].bias is not None) == bias  # as the model class's own layer
    assert all(parameter.requires_grad for parameter in mlp.parameters())
    built.model.eval()
    assert logits(built).shape == (2, len(LABELS))


def test_the_mlp_width_defaults_to_the_model_width(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    build_head(built.model, built.head_modules, HeadSpec(type="mlp"), len(LABELS))
    mlp = built.model.get_submodule("classifier")
    assert isinstance(mlp, nn.Sequential) and isinstance(mlp[2], nn.GELU)
    assert mlp[1].out_features == 32


def test_the_mlp_draws_its_weights_from_the_seed(tiny_bert_dir: Path) -> None:
    def head_state(seed: int) -> dict[str, torch.Tensor]:
        built = classifier(tiny_bert_dir, seed=seed)
        build_head(built.model, built.head_modules, HeadSpec(type="mlp"), len(LABELS))
        return built.model.get_submodule("classifier").state_dict()

    first, again, other = head_state(7), head_state(7), head_state(8)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["1.weight"], other["1.weight"])


def test_a_head_without_a_logits_layer_is_refused(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    with pytest.raises(SpecError, match="hold none") as caught:
        build_head(built.model, ["bert.pooler"], HeadSpec(type="mlp"), len(LABELS))
    assert caught.value.param == "head.type"


@pytest.mark.parametrize(
    "method", [{"type": "lora", "r": 4, "target_modules": ["query", "value"]}, {"type": "bitfit"}]
)
def test_an_mlp_head_job_reloads_with_its_trained_head(
    method: dict[str, object],
    tiny_spec: MakeSpec,
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tmp_path: Path,
) -> None:
    spec = JobSpec.model_validate(
        tiny_spec(method=method, epochs=1).model_dump() | {"head": {"type": "mlp", "hidden_size": 16}}
    )
    assert not spec.peft_layout  # even for LoRA: PEFT's classes only know a linear head
    job = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    ).job
    out_dir = tmp_path / "artifact"
    write_artifact(out_dir, job)
    assert json.loads((out_dir / "deltatune.json").read_text())["layout"] == "deltatune"

    texts = [
        example.text for example in read_classification_file(sentiment_files[1], param="validation_file")
    ]
    loaded = load_artifact(out_dir, model_dirs, device=torch.device("cpu"))
    assert isinstance(loaded.model.get_submodule("classifier"), nn.Sequential)
    in_memory = LoadedArtifact(
        job.model, job.tokenizer, list(job.labels), {}, loaded.max_length, loaded.device
    )
    expected = predict_logits(in_memory, texts)
    torch.testing.assert_close(predict_logits(loaded, texts), expected, atol=1e-5, rtol=0)
