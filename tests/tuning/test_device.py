"""Where training runs and in what precision: bf16 autocast where it is fast, float32 weights always."""

import json
from pathlib import Path

import pytest
import torch

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import device
from tuning.device import lists_native_bf16, uses_bf16
from tuning.events import Event
from tuning.fit import Fitted, fit
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


Runs = dict[str, tuple[Fitted, list[Event]]]
VALIDATION = sentiment_lines(32, seed=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, model_dirs: list[Path]) -> Runs:
    """The same job trained under bf16 autocast and in float32."""
    folder = tmp_path_factory.mktemp("precisions")
    training = write_jsonl(folder / "train.jsonl", sentiment_lines(64, seed=1))
    validation = write_jsonl(folder / "validation.jsonl", VALIDATION)
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
    return runs


def test_bf16_training_keeps_float32_weights_and_learns_as_float32_does(runs: Runs) -> None:
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


def test_evaluations_run_as_training_does_and_the_reported_one_in_float32(runs: Runs) -> None:
    def evaluated(events: list[Event]) -> dict[int, float]:
        return {e.data["step"]: e.data["val_loss"] for e in events if e.type == "eval"}

    (bf16, bf16_events), (_, float32_events) = runs["bf16"], runs["no"]
    # Step 0: the same untrained model, evaluated under autocast by the bf16 job: bf16 rounding apart.
    first = evaluated(bf16_events)[0], evaluated(float32_events)[0]
    assert first[0] != first[1]
    assert first[0] == pytest.approx(first[1], rel=8 * BF16_EPS)
    # The reported evaluation is float32: the trained weights' float32 loss, to float32's rounding.
    rows = [json.loads(line) for line in VALIDATION]
    inputs = bf16.job.tokenizer([row["text"] for row in rows], padding=True, return_tensors="pt")
    targets = torch.tensor([list(bf16.job.labels).index(row["label"]) for row in rows])
    with torch.inference_mode():
        logits = bf16.job.model(**inputs).logits
    loss = torch.nn.functional.cross_entropy(logits, targets).item()
    assert bf16.job.metrics["val_loss"] == pytest.approx(loss, rel=1e-5)


def test_jobs_train_with_eager_attention_on_the_cpu_and_sdpa_elsewhere(runs: Runs) -> None:
    assert device.attention_for(CPU) == "eager" and device.attention_for(CUDA) == "sdpa"
    for fitted, _ in runs.values():
        assert fitted.job.model.config._attn_implementation == "eager"
