"""Spec parts that depend on the task: each impossible pairing refused with the part it names."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.tuning.datasets import write_jsonl
from tuning.data import read_data_file
from tuning.errors import DataError
from tuning.spec import CompositionError, JobSpec
from tuning.validation import check_trainable

BASE = {"base_model": "m", "training_file": "file-t"}
LM = {**BASE, "task": "causal_lm"}


def refused(body: dict[str, Any]) -> CompositionError:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(body)
    (error,) = caught.value.errors()
    reason = (error.get("ctx") or {}).get("error")
    assert isinstance(reason, CompositionError), error
    return reason


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**LM, "problem_type": "single_label"}, "problem_type"),
        ({**LM, "head": {"type": "mlp"}}, "head"),
        ({**LM, "regularizers": {"kl": {"weight": 1.0}}}, "regularizers.kl"),
        ({**LM, "regularizers": {"ewc": {"weight": 1.0, "fisher_file": "f"}}}, "regularizers.ewc"),
        ({**BASE, "problem_type": "regression", "regularizers": {"kl": {"weight": 1.0}}}, "regularizers.kl"),
        ({**BASE, "data": {"packing": True}}, "data.packing"),
        ({**BASE, "data": {"chat_template": "{{ messages }}"}}, "data.chat_template"),
        ({**BASE, "early_stopping": {"metric": "loss"}}, "early_stopping"),
        (
            {**LM, "validation_file": "file-v", "early_stopping": {"metric": "accuracy"}},
            "early_stopping.metric",
        ),
        (
            {
                **BASE,
                "problem_type": "regression",
                "validation_file": "v",
                "early_stopping": {"metric": "macro_f1"},
            },
            "early_stopping.metric",
        ),
    ],
)
def test_task_parts_that_cannot_work_are_refused_naming_the_part(body: dict[str, Any], param: str) -> None:
    assert refused(body).param == param


def test_each_task_accepts_its_own_metric() -> None:
    JobSpec.model_validate({**LM, "validation_file": "v", "early_stopping": {"metric": "perplexity"}})
    JobSpec.model_validate({**BASE, "validation_file": "v", "early_stopping": {"metric": "micro_f1"}})


def test_regression_on_string_labels_is_refused_at_validation_with_the_line(tmp_path: Path) -> None:
    lines = ['{"text": "a", "label": "low"}', '{"text": "b", "label": "high"}']
    training = read_data_file(write_jsonl(tmp_path / "t.jsonl", lines), param="training_file")
    spec = JobSpec.model_validate({**BASE, "problem_type": "regression"})
    with pytest.raises(DataError) as caught:
        check_trainable(spec, tmp_path, training, None)
    assert (caught.value.param, caught.value.line) == ("training_file", 1)
