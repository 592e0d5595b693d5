"""Full fine-tuning: every parameter trains; the artifact is the dense delta θ−θ₀ and reloads exactly."""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from tuning import JobSpec, load_artifact, predict_logits
from tuning.artifacts import write_artifact
from tuning.artifacts.load import LoadedArtifact
from tuning.data import read_classification_file
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.full import FullMethod
from tuning.task_model import load_classifier

MakeSpec = Callable[..., JobSpec]


def test_every_parameter_requires_grad(tiny_gpt2_dir: Path) -> None:
    built = load_classifier(tiny_gpt2_dir, ["a", "b"], max_seq_length=32)
    assert trainable_names(built.model) == ["score.weight"]
    context = MethodContext(built.tokenizer, built.head_modules, find_layers(built.model, built.head_modules))
    applied = apply_method(built.model, FullMethod(), context)
    assert trainable_names(built.model) == [name for name, _ in built.model.named_parameters()]
    assert applied.details["trained_tensors"] == len(trainable_names(built.model))


def test_the_artifact_is_the_dense_delta_and_reloads_the_trained_model(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec(method={"type": "full"}, epochs=3, learning_rate=5e-3)
    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    )
    job = fitted.job
    assert job.metrics["val_loss"] < job.metrics["initial_val_loss"]
    out_dir = tmp_path / "artifact"
    write_artifact(out_dir, job)
    manifest = json.loads((out_dir / "deltatune.json").read_text())
    assert manifest["layout"] == "deltatune"

    trained = dict(job.model.named_parameters())
    with safe_open(str(out_dir / "delta.safetensors"), framework="pt") as stored:
        kinds = json.loads((stored.metadata() or {})["kinds"])
        # Every checkpoint tensor is stored as its change, the new head as its value.
        assert {n for n, kind in kinds.items() if kind == "difference"} == set(trained) - {
            "classifier.weight",
            "classifier.bias",
        }
        assert {n for n, kind in kinds.items() if kind == "value"} == {"classifier.weight", "classifier.bias"}
        query = "bert.encoder.layer.0.attention.self.query.weight"
        expected = trained[query].detach() - job.snapshot.values[query]
        assert stored.get_tensor(query).abs().sum() > 0
        assert torch.equal(stored.get_tensor(query), expected)

    texts = [
        example.text for example in read_classification_file(sentiment_files[1], param="validation_file")
    ]
    loaded = load_artifact(out_dir, model_dirs, device=torch.device("cpu"))
    in_memory = LoadedArtifact(
        job.model, job.tokenizer, list(job.labels), {}, loaded.max_length, loaded.device
    )
    torch.testing.assert_close(
        predict_logits(loaded, texts), predict_logits(in_memory, texts), atol=1e-5, rtol=0
    )
