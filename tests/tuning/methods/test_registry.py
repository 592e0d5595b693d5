"""The method registry: a registration lacking a part fails at import, every method package is listed
once, and everything that lists methods (spec union, catalogue, estimate, layouts) covers them all."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import pytest

import tuning.methods
from tuning.estimate import trainable_parameters
from tuning.methods import METHODS, Method
from tuning.methods.base_model import ModelShapes
from tuning.methods.registry import PaperRate, by_name, register_method
from tuning.models import tensor_shapes
from tuning.spec import JobSpec
from tuning.spec.catalogue import catalogue
from tuning.spec_base import MethodOptions

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_JOBS = ROOT / "examples" / "jobs"


class ToyMethod(MethodOptions):
    """A toy method, registered only by these tests."""

    paper: ClassVar[str] = "Nobody 2024, a toy"
    type: Literal["toy"] = "toy"


def toy_estimate(options: ToyMethod, shapes: ModelShapes) -> int:
    return 0


def toy_torch_half() -> Any:
    raise AssertionError("never loaded: registration imports no torch")


def toy_parts(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "toy",
        "options": ToyMethod,
        "estimate": toy_estimate,
        "torch_half": toy_torch_half,
        "learning_rate": lambda _options: PaperRate(1e-3, "Nobody 2024, a toy"),
        "additive": True,
        "mergeable": False,
    } | overrides


def test_a_complete_registration_gives_its_entry() -> None:
    entry = register_method(**toy_parts())
    assert (entry.name, entry.layout, entry.additive) == ("toy", "deltatune", True)
    assert not entry.changes_pretrained(ToyMethod()) and entry.virtual_tokens(ToyMethod()) == 0


def test_a_method_registered_without_an_estimate_fails() -> None:
    parts = toy_parts()
    del parts["estimate"]
    with pytest.raises(TypeError, match="estimate"):
        register_method(**parts)
    with pytest.raises(TypeError, match="registers no estimate"):
        register_method(**toy_parts(estimate=None))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"torch_half": None}, "registers no torch_half"),
        ({"learning_rate": None}, "registers no learning_rate"),
        ({"name": "other"}, "must default to 'other'"),
        ({"additive": True, "mergeable": True}, "nothing to merge"),
        ({"example": {"unknown": 1}}, "Extra inputs"),
    ],
)
def test_a_registration_whose_parts_disagree_fails(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(Exception, match=words):
        register_method(**toy_parts(**overrides))


def test_every_method_names_the_paper_its_auto_rate_comes_from() -> None:
    for name, entry in METHODS.items():
        rate = entry.learning_rate(entry.options.model_validate(entry.example))
        assert 0 < rate.rate <= 1.0 and rate.source.strip(), name


def test_a_method_registered_twice_is_refused() -> None:
    entry = register_method(**toy_parts())
    with pytest.raises(TypeError, match="registered twice"):
        by_name([entry, entry])


def test_every_method_package_is_listed_once() -> None:
    packages = {info.name for info in pkgutil.iter_modules(tuning.methods.__path__) if info.ispkg}
    assert packages == set(METHODS)
    for name, entry in METHODS.items():
        assert entry.name == name and entry.options.model_fields["type"].default == name


def test_the_spec_union_and_the_catalogue_list_every_registered_method() -> None:
    union = get_args(get_args(Method)[0])
    assert union == tuple(entry.options for entry in METHODS.values())
    listed = [item.name for item in catalogue() if item.kind == "method"]
    assert listed == list(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_has_an_estimate_and_its_halves(name: str, tiny_bert_dir: Path) -> None:
    entry = METHODS[name]
    spec = JobSpec.model_validate(
        {"base_model": "tiny-bert", "training_file": "file-t", "method": {"type": name, **entry.example}}
    )
    count = trainable_parameters(
        spec, tensor_shapes(tiny_bert_dir), {"hidden_size": 32, "num_hidden_layers": 2}, outputs=2
    )
    assert isinstance(count, int) and count >= 0
    assert callable(entry.torch_half().apply)
    if entry.peft_artifact is not None:
        layout = entry.peft_artifact()
        assert callable(layout.write) and callable(layout.load)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_has_an_example_job(name: str) -> None:
    # The example jobs are what the README, the benchmark and the learning test run.
    spec = JobSpec.model_validate_json((EXAMPLE_JOBS / f"{name}.json").read_text())
    assert spec.method.type == name


@pytest.mark.parametrize("module", ["tuning.methods", *(f"tuning.methods.{name}" for name in METHODS)])
def test_the_registrations_import_no_torch(module: str) -> None:
    # A fresh interpreter: this one has torch loaded already.
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(found.stdout.splitlines()[-1])
    assert not {name.split(".")[0] for name in loaded} & {"torch", "transformers", "peft"}
