"""Where training runs and in what precision: bf16 autocast where it is fast, float32 weights always."""

from pathlib import Path

import pytest
import torch

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import device
from tuning.device import lists_native_bf16, uses_bf16
from tuning.events import Event
from tuning.fit import fit
from tuning.spec import JobSpec

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BF16_EPS = torch.finfo(torch.bfloat16).eps  # 2^-7: one bf16 rounding, relative


def test_cpu_flags_name_native_bf16() -> None:
    assert lists_native_bf16("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    assert lists_native_bf16("flags\t\t: fpu amx_tile amx_bf16 amx_int8\n")
    assert not lists_native_bf16("flags\t\t: fpu sse avx2 avx512f\nbugs\t\t: amx_bf16\n")
    assert not lists_native_bf16("")


@pytest.mark.parametrize("native", [True, False])
def test_auto_uses_bf16_on_cuda_and_on_cpus_with_native_bf16(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert uses_bf16(CPU, "auto") is native
    assert uses_bf16(CUDA, "auto")
    for where in (CPU, CUDA):  # the spec overrides the choice either way
        assert uses_bf16(where, "bf16") and not uses_bf16(where, "no")


def spec(mixed_precision: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
            "hyperparameters": {
                "epochs": 10,
                "batch_size": 8,
                "learning_rate": 2e-2,
                "logging_steps": 1,
                "mixed_precision": mixed_precision,
            },
        }
    )


def test_bf16_training_keeps_float32_weights_and_learns_as_float32_does(
    tmp_path: Path, model_dirs: list[Path]
) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(64, seed=1))
    validation = write_jsonl(tmp_path / "validation.jsonl", sentiment_lines(32, seed=2))
    runs = {}
    for precision in ("bf16", "no"):
        events: list[Event] = []
        fitted = fit(
            spec(precision),
            training_path=training,
            validation_path=validation,
            model_dirs=model_dirs,
            on_event=events.append,
        )
        runs[precision] = fitted, events
    (bf16, bf16_events), (float32, float32_events) = runs["bf16"], runs["no"]
    events = bf16_events + float32_events
    said = [e.data["training_precision"] for e in events if "training_precision" in e.data]
    assert said == ["bf16 autocast", "float32"]
    # Autocast changes the arithmetic, not the weights: every tensor the artifact would hold is float32.
    assert all(p.dtype == torch.float32 for p in bf16.job.model.parameters())
    # The first step (same weights, same batch) differs by bf16 rounding only, and does differ.
    first = [next(e.data["train_loss"] for e in events if e.type == "metrics") for _, events in runs.values()]
    assert first[0] != first[1]
    assert first[0] == pytest.approx(first[1], rel=8 * BF16_EPS)
    # And it learns as float32 does (evaluation itself is float32 in both).
    for fitted in (bf16, float32):
        assert fitted.job.metrics["val_accuracy"] >= fitted.job.metrics["initial_val_accuracy"] + 0.2
    assert bf16.job.metrics["val_accuracy"] >= float32.job.metrics["val_accuracy"] - 0.1
