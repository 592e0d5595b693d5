"""Delta tuning: W frozen, a dense Δw beside it; with plain SGD its trajectory is full fine-tuning's."""

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers.pytorch_utils import Conv1D

from tests.tuning.datasets import sentiment_lines
from tuning import JobSpec, load_artifact, predict_logits
from tuning.artifacts import write_artifact
from tuning.artifacts.load import LoadedArtifact
from tuning.batching import encode
from tuning.data import read_classification_file
from tuning.errors import SpecError
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods.apply import Applied, MethodContext, trainable_names
from tuning.methods.delta import DeltaMethod
from tuning.methods.delta.model import apply, delta_layers
from tuning.optim import parameter_groups
from tuning.spec import Hyperparameters
from tuning.task_model import TaskModel, load_classifier
from tuning.tasks.single_label import TASK as SINGLE_LABEL
from tuning.train import seed_everything, train

MakeSpec = Callable[..., JobSpec]
TEXTS = ["a wonderful movie", "the plot was awful and boring", "ok"]


def classifier_for(model_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)


def apply_to(classifier: TaskModel, method: DeltaMethod) -> Applied:
    layers = find_layers(classifier.model, classifier.head_modules)
    return apply(
        classifier.model, method, MethodContext(classifier.tokenizer, classifier.head_modules, layers)
    )


def logits(classifier: TaskModel) -> torch.Tensor:
    inputs = classifier.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return classifier.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2"])
def test_output_is_the_base_at_init_and_only_delta_and_head_train(
    model: str, tiny_bert_dir: Path, tiny_gpt2_dir: Path
) -> None:
    classifier = classifier_for(tiny_bert_dir if model == "tiny-bert" else tiny_gpt2_dir)
    classifier.model.eval()
    before = logits(classifier)
    weights = dict(classifier.model.named_parameters())
    projection = nn.Linear if model == "tiny-bert" else Conv1D
    expected = {
        name
        for name, module in classifier.model.named_modules()
        if isinstance(module, projection) and name not in classifier.head_modules
    }
    applied = apply_to(classifier, DeltaMethod())

    assert logits(classifier).equal(before)  # Δw = 0: bit-identical, Conv1D included
    layers = delta_layers(classifier.model)
    assert set(layers) == expected and set(applied.details["delta_layers"]) == expected
    assert trainable_names(classifier.model) == [
        name
        for name, _ in classifier.model.named_parameters()
        if name.endswith(".delta") or name.split(".")[0] in classifier.head_modules
    ]
    for name, layer in layers.items():
        # W is the very tensor the checkpoint loaded, re-parented, frozen; Δw has its shape and is zero.
        assert (
            layer.base_layer.weight is weights[f"{name}.weight"] and not layer.base_layer.weight.requires_grad
        )
        assert layer.delta.shape == layer.base_layer.weight.shape and not layer.delta.any()
    assert applied.details["delta_parameters"] == sum(layer.delta.numel() for layer in layers.values())


def test_targets_pick_layers_and_the_head_is_never_wrapped(tiny_bert_dir: Path) -> None:
    classifier = classifier_for(tiny_bert_dir)
    apply_to(classifier, DeltaMethod(target_modules=["query", "bert.pooler.dense"]))
    assert sorted(delta_layers(classifier.model)) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.1.attention.self.query",
        "bert.pooler.dense",
    ]
    with pytest.raises(SpecError, match="match no nn.Linear") as caught:
        apply_to(classifier_for(tiny_bert_dir), DeltaMethod(target_modules=["classifier"]))
    assert caught.value.param == "method.target_modules"


def test_deviations_and_the_merged_layer(tiny_gpt2_dir: Path) -> None:
    classifier = classifier_for(tiny_gpt2_dir)
    pretrained = {name: p.shape for name, p in classifier.model.named_parameters()}
    applied = apply_to(classifier, DeltaMethod(target_modules=["c_attn"]))
    layer = delta_layers(classifier.model)["transformer.h.0.attn.c_attn"]
    nn.init.normal_(layer.delta, std=0.02)
    assert applied.deviations is not None
    deviations = dict(applied.deviations())
    assert set(deviations) == {f"transformer.h.{i}.attn.c_attn.weight" for i in (0, 1)}
    assert all(delta.shape == pretrained[name] for name, delta in deviations.items())
    assert deviations["transformer.h.0.attn.c_attn.weight"] is layer.delta

    merged = layer.merged_layer()
    assert type(merged) is Conv1D
    torch.testing.assert_close(merged.weight, layer.base_layer.weight + layer.delta)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(merged(x), layer(x), atol=1e-6, rtol=0)


def tiny_bert_for_sgd(tiny_bert_dir: Path) -> TaskModel:
    """The tiny BERT without dropout (the comparison is of weights; masks would only add noise) and
    with a louder head: a 0.02-std head passes back gradients so small that SGD would barely move W,
    and a test of "equal within 1e-6" would then prove little."""
    classifier = classifier_for(tiny_bert_dir)
    for module in classifier.model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    head = classifier.model.get_submodule("classifier")
    assert isinstance(head, nn.Linear)
    with torch.no_grad():
        head.weight.mul_(50)
    return classifier


def test_sgd_trajectory_of_w_plus_delta_equals_full_fine_tuning(tiny_bert_dir: Path) -> None:
    targets = ["query", "value", "intermediate.dense"]
    delta_side = tiny_bert_for_sgd(tiny_bert_dir)
    full_side = copy.deepcopy(delta_side)
    apply_to(delta_side, DeltaMethod(target_modules=targets))
    layers = delta_layers(delta_side.model)
    assert len(layers) == 6
    # Full fine-tuning of exactly the same weights (and the same head), by hand.
    full_weights = {name: full_side.model.get_parameter(f"{name}.weight") for name in layers}
    for weight in full_weights.values():
        weight.requires_grad_(True)

    hp = Hyperparameters(
        optimizer="sgd",
        learning_rate=1.0,
        epochs=3,
        batch_size=8,
        warmup_ratio=0.0,
        max_grad_norm=None,
        seed=3,
    )
    examples = [json.loads(line) for line in sentiment_lines(24, seed=5)]
    encoded = encode(
        delta_side.tokenizer,
        [example["text"] for example in examples],
        [int(example["label"] == "positive") for example in examples],
        max_length=32,
    )

    def run(
        classifier: TaskModel, current: Callable[[], dict[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """Train with the real loop; the effective weights (and head) before every step and at the end."""
        seen: list[dict[str, torch.Tensor]] = []

        def record(step: int, epoch: int) -> None:
            seen.append({name: value.detach().clone() for name, value in current().items()})

        seed_everything(hp.seed)
        groups = parameter_groups(classifier.model, hp.weight_decay)
        train(
            classifier.model,
            encoded,
            None,
            hp,
            task=SINGLE_LABEL,
            device=torch.device("cpu"),
            optimizer_groups=groups,
            before_step=record,
        )
        record(0, 0)
        return seen

    def head(classifier: TaskModel) -> dict[str, torch.Tensor]:
        return {
            f"head.{name}": p for name, p in classifier.model.get_submodule("classifier").named_parameters()
        }

    delta_path = run(
        delta_side,
        lambda: {n: layer.base_layer.weight + layer.delta for n, layer in layers.items()} | head(delta_side),
    )
    full_path = run(full_side, lambda: dict(full_weights) | head(full_side))

    assert len(delta_path) == len(full_path) == 3 * 3 + 1
    for step, (delta_state, full_state) in enumerate(zip(delta_path, full_path, strict=True)):
        for name in full_state:
            torch.testing.assert_close(
                delta_state[name], full_state[name], atol=1e-6, rtol=0, msg=f"step {step}: {name}"
            )
    # The weights really moved (the comparison could fail), and W itself never did.
    moved = max(float((full_path[-1][n] - full_path[0][n]).abs().max()) for n in layers)
    assert moved > 1e-2
    assert all(torch.equal(layer.base_layer.weight, full_path[0][name]) for name, layer in layers.items())


def test_the_artifact_holds_delta_and_head_and_reloads_the_trained_model(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec(
        method={"type": "delta", "target_modules": ["query", "value"]}, epochs=3, learning_rate=5e-3
    )
    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    )
    job = fitted.job
    assert job.metrics["val_loss"] < job.metrics["initial_val_loss"]
    out_dir = tmp_path / "artifact"
    files = write_artifact(out_dir, job)
    assert sorted(files) == ["delta.safetensors", "deltatune.json"]
    assert json.loads((out_dir / "deltatune.json").read_text())["layout"] == "deltatune"

    trained = dict(job.model.named_parameters())
    with safe_open(str(out_dir / "delta.safetensors"), framework="pt") as stored:
        kinds = json.loads((stored.metadata() or {})["kinds"])
        # Only what the job added: four Δw and the head, stored as values; no pretrained tensor.
        assert set(kinds) == set(trainable_names(job.model)) and set(kinds.values()) == {"value"}
        assert len([name for name in kinds if name.endswith(".delta")]) == 4
        query = "bert.encoder.layer.0.attention.self.query.delta"
        assert stored.get_tensor(query).abs().sum() > 0
        assert torch.equal(stored.get_tensor(query), trained[query].detach())

    texts = [example.text for example in read_classification_file(sentiment_files[1])]
    loaded = load_artifact(out_dir, model_dirs, device=torch.device("cpu"))
    in_memory = LoadedArtifact(
        job.model, job.tokenizer, list(job.labels), {}, loaded.max_length, loaded.device
    )
    torch.testing.assert_close(
        predict_logits(loaded, texts), predict_logits(in_memory, texts), atol=1e-5, rtol=0
    )
