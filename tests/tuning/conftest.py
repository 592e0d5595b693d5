from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import make_tiny_bert
from tests.tuning.datasets import sentiment_lines, write_jsonl
from tests.tuning.distributed_jobs import Seen, job_spec, on_one_process
from tuning import RunResult
from tuning.spec import JobSpec


@pytest.fixture(autouse=True)
def float32_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CPU trains as one without native bf16 (mixed_precision "auto" means float32), so a test's
    numbers do not depend on the CPU it runs on; tests of bf16 training ask for it ("bf16")."""
    monkeypatch.setattr("tuning.device.cpu_has_native_bf16", lambda: False)


@pytest.fixture(scope="session")
def model_dirs(tiny_bert_dir: Path) -> list[Path]:
    return [tiny_bert_dir.parent]


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(training, validation) JSONL files the tiny BERT learns in a few epochs."""
    directory = tmp_path_factory.mktemp("sentiment")
    training = write_jsonl(directory / "train.jsonl", sentiment_lines(64, seed=1))
    validation = write_jsonl(directory / "validation.jsonl", sentiment_lines(32, seed=2))
    return training, validation


@pytest.fixture()
def tiny_spec() -> Callable[..., JobSpec]:
    """A spec for the tiny BERT that learns the sentiment data; keyword overrides go to hyperparameters."""

    def make(method: dict[str, Any] | None = None, **hyperparameters: Any) -> JobSpec:
        hp = {"epochs": 10, "batch_size": 8, "learning_rate": 2e-2, "warmup_ratio": 0.1, "logging_steps": 4}
        return JobSpec.model_validate(
            {
                "base_model": "tiny-bert",
                "training_file": "file-train",
                "validation_file": "file-validation",
                "method": method
                or {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]},
                "hyperparameters": hp | hyperparameters,
            }
        )

    return make


@pytest.fixture(scope="module")
def nodrop_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The files of tests.tuning.distributed_jobs' job: a tiny BERT without dropout and its data."""
    directory = tmp_path_factory.mktemp("distributed")
    make_tiny_bert(directory / "models" / "tiny-bert-nodrop", dropout=0.0)
    return {
        "training_path": write_jsonl(directory / "train.jsonl", sentiment_lines(48, seed=1)),
        "validation_path": write_jsonl(directory / "validation.jsonl", sentiment_lines(16, seed=2)),
        "model_dirs": [directory / "models"],
    }


@pytest.fixture(scope="module")
def one_process(
    nodrop_files: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Path, Seen]:
    """That job on one process, as the others are compared with: its result, artifact and what it told."""
    return on_one_process(job_spec(1), tmp_path_factory.mktemp("one") / "out", nodrop_files)
