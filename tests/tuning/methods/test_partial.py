"""Partial fine-tuning: only the chosen modules and the head train; every other tensor stays bit-identical."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tuning import JobSpec, SpecError
from tuning.artifacts.deltatune_layout import delta_state_dict
from tuning.fit import fit
from tuning.layers import find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.partial import PartialMethod
from tuning.task_model import TaskModel, load_classifier

MakeSpec = Callable[..., JobSpec]
LABELS = ["negative", "positive"]


def classifier(model_dir: Path, seed: int = 0) -> TaskModel:
    torch.manual_seed(seed)  # the head's initial weights
    return load_classifier(model_dir, LABELS, max_seq_length=32)


def apply_partial(built: TaskModel, **options: object) -> set[str]:
    context = MethodContext(built.tokenizer, built.head_modules, find_layers(built.model, built.head_modules))
    apply_method(built.model, PartialMethod.model_validate({"type": "partial", **options}), context)
    return set(trainable_names(built.model))


def names_under(model: nn.Module, *prefixes: str) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


def test_patterns_train_the_matching_modules_and_the_head(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    trainable = apply_partial(built, modules=["*.layer.1.attention.self.*", "bert.embeddings.LayerNorm"])
    expected = names_under(
        built.model, "bert.encoder.layer.1.attention.self.", "bert.embeddings.LayerNorm.", "classifier."
    )
    assert trainable == expected
    assert len(expected) == 3 * 2 + 2 + 2  # query/key/value weight+bias, LayerNorm, head


def test_last_n_layers_trains_the_top_of_the_stack_and_what_runs_after_it(
    tiny_bert_dir: Path, tiny_gpt2_dir: Path
) -> None:
    bert = classifier(tiny_bert_dir)
    assert apply_partial(bert, last_n_layers=1) == names_under(
        bert.model, "bert.encoder.layer.1.", "bert.pooler.", "classifier."
    )
    gpt2 = classifier(tiny_gpt2_dir)
    assert apply_partial(gpt2, last_n_layers=2) == names_under(
        gpt2.model, "transformer.h.", "transformer.ln_f.", "score."
    )


def test_head_only_is_a_linear_probe(tiny_gpt2_dir: Path) -> None:
    built = classifier(tiny_gpt2_dir)
    assert apply_partial(built, head_only=True) == {"score.weight"}


def test_patterns_matching_no_module_name_them_and_show_real_names(tiny_bert_dir: Path) -> None:
    built = classifier(tiny_bert_dir)
    with pytest.raises(SpecError) as caught:
        apply_partial(built, modules=["*.layer.1.*", "*.h.0.*", "classifier"])
    assert caught.value.param == "method.modules"
    message = caught.value.message
    assert "'*.h.0.*'" in message and "'classifier'" in message  # the head is not a choice: it trains anyway
    assert "'*.layer.1.*'" not in message
    assert "bert.embeddings.word_embeddings" in message and "bert.encoder.layer.0." in message
    assert not any(
        p.requires_grad for n, p in built.model.named_parameters() if not n.startswith("classifier")
    )


def test_patterns_matching_only_modules_without_parameters_are_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(SpecError, match="without parameters") as caught:
        apply_partial(classifier(tiny_bert_dir), modules=["*.dropout"])
    assert caught.value.param == "method.modules"


def test_more_layers_than_the_model_has_is_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(SpecError, match="has 2 transformer layers") as caught:
        apply_partial(classifier(tiny_bert_dir), last_n_layers=3)
    assert caught.value.param == "method.last_n_layers"


@pytest.mark.parametrize(
    ("options", "chosen"),
    [
        (
            {"modules": ["*.layer.0.output.*", "*.layer.1.attention.self.query"]},
            ("bert.encoder.layer.0.output.", "bert.encoder.layer.1.attention.self.query."),
        ),
        ({"last_n_layers": 1}, ("bert.encoder.layer.1.", "bert.pooler.")),
        ({"head_only": True}, ()),
    ],
)
def test_after_training_only_the_chosen_tensors_and_the_head_differ_from_the_base(
    options: dict[str, object],
    chosen: tuple[str, ...],
    tiny_spec: MakeSpec,
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tiny_bert_dir: Path,
) -> None:
    spec = tiny_spec(method={"type": "partial", **options}, epochs=1)
    fitted = fit(
        spec, training_path=sentiment_files[0], validation_path=sentiment_files[1], model_dirs=model_dirs
    )
    trained = dict(fitted.job.model.named_parameters())
    # Seeded as the job was, so the base's head is the job's head before training.
    base = dict(classifier(tiny_bert_dir, spec.hyperparameters.seed).model.named_parameters())
    assert set(trained) == set(base)
    changed = {name for name in base if not torch.equal(trained[name], base[name])}
    expected = {name for name in base if chosen and name.startswith(chosen)}
    assert changed == expected | {"classifier.weight", "classifier.bias"}
    stored, _ = delta_state_dict(fitted.job)
    assert set(stored) == expected | {"classifier.weight", "classifier.bias"}
