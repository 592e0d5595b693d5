from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from tuning import Cancelled, Event, JobSpec, run
from tuning.data import read_classification_file
from tuning.optim import learning_rate_at, parameter_groups, warmup_steps

MakeSpec = Callable[..., JobSpec]


def train_events(
    spec: JobSpec, out_dir: Path, files: tuple[Path, Path], model_dirs: list[Path]
) -> tuple[list[Event], dict[str, float]]:
    events: list[Event] = []
    result = run(
        spec,
        out_dir,
        training_path=files[0],
        validation_path=files[1],
        model_dirs=model_dirs,
        on_event=events.append,
    )
    return events, result.metrics


def of_type(events: list[Event], kind: str) -> list[dict]:
    return [event.data for event in events if event.type == kind]


def test_same_seed_gives_identical_losses_and_another_seed_does_not(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    def losses(seed: int, name: str) -> list[float]:
        # LoRA dropout on: its draws must come from the seed too.
        spec = tiny_spec(epochs=2, logging_steps=1, seed=seed, method={"type": "lora", "dropout": 0.1})
        events, _ = train_events(spec, tmp_path / name, sentiment_files, model_dirs)
        return [data["train_loss"] for data in of_type(events, "metrics")]

    first, second = losses(7, "a"), losses(7, "b")
    assert len(first) == 16
    assert first == second
    assert losses(8, "c") != first


def test_loss_falls_and_accuracy_rises_on_separable_data(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    events, metrics = train_events(tiny_spec(), tmp_path / "out", sentiment_files, model_dirs)
    train_losses = [data["train_loss"] for data in of_type(events, "metrics")]
    assert sum(train_losses[-3:]) / 3 < 0.5 * sum(train_losses[:3]) / 3
    assert metrics["initial_val_accuracy"] <= 0.7
    assert metrics["val_accuracy"] >= 0.95
    assert metrics["val_loss"] < 0.5 * metrics["initial_val_loss"]


def test_events_carry_progress_and_evaluation_each_epoch(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    events, metrics = train_events(
        tiny_spec(epochs=3, logging_steps=3), tmp_path / "out", sentiment_files, model_dirs
    )
    per_epoch, total = 8, 24  # 64 examples in batches of 8

    metric_events = of_type(events, "metrics")
    assert [data["step"] for data in metric_events] == list(range(3, total + 1, 3))
    for data in metric_events:
        assert set(data) == {
            "step",
            "total_steps",
            "epoch",
            "train_loss",
            "learning_rate",
            "examples_per_second",
            "elapsed_seconds",
            "examples_seen",
            "trained_tokens",
        }
        assert data["total_steps"] == total
        assert data["examples_seen"] == 8 * data["step"] and data["trained_tokens"] > data["examples_seen"]
        assert data["epoch"] == pytest.approx(data["step"] / per_epoch, abs=1e-4)
        assert data["examples_per_second"] > 0 and data["elapsed_seconds"] > 0
    assert [d["elapsed_seconds"] for d in metric_events] == sorted(
        d["elapsed_seconds"] for d in metric_events
    )

    eval_events = of_type(events, "eval")
    assert [(d["step"], d["epoch"]) for d in eval_events] == [(0, 0.0), (8, 1.0), (16, 2.0), (24, 3.0)]
    assert set(eval_events[0]) == {"step", "epoch", "val_loss", "val_accuracy", "val_macro_f1"}
    assert eval_events[0]["val_accuracy"] == metrics["initial_val_accuracy"]
    assert eval_events[-1]["val_loss"] == metrics["val_loss"]

    messages = [event.message for event in events if event.type == "message"]
    assert any("64 training and 32 validation" in m for m in messages)
    assert any(m.startswith("training started") for m in messages)
    assert any(m.startswith("training finished; writing the artifact") for m in messages)


def test_eval_steps_evaluates_every_n_steps_and_at_the_end(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    events, _ = train_events(tiny_spec(epochs=2, eval_steps=5), tmp_path / "out", sentiment_files, model_dirs)
    assert [d["step"] for d in of_type(events, "eval")] == [0, 5, 10, 15, 16]


def test_examples_and_trained_tokens_are_counted(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec(epochs=2)
    result = run(spec, tmp_path / "out", training_path=sentiment_files[0], model_dirs=model_dirs)
    tokenizer = AutoTokenizer.from_pretrained(model_dirs[0] / "tiny-bert")
    texts = [example.text for example in read_classification_file(sentiment_files[0])]
    tokens_per_epoch = sum(len(ids) for ids in tokenizer(texts)["input_ids"])  # padding is not counted
    assert (result.examples_seen, result.steps) == (2 * 64, 2 * 8)
    assert result.trained_tokens == 2 * tokens_per_epoch


def test_should_stop_cancels_and_leaves_nothing(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calls: list[int] = []

    def stop_after_five_steps() -> bool:
        calls.append(1)
        return len(calls) > 5

    events: list[Event] = []
    with pytest.raises(Cancelled):
        run(
            tiny_spec(logging_steps=1),
            out_dir,
            training_path=sentiment_files[0],
            model_dirs=model_dirs,
            on_event=events.append,
            should_stop=stop_after_five_steps,
        )
    assert [d["step"] for d in of_type(events, "metrics")] == [1, 2, 3, 4, 5]
    assert list(out_dir.iterdir()) == []


def test_learning_rate_warms_up_then_decays(
    tiny_spec: MakeSpec, sentiment_files: tuple[Path, Path], model_dirs: list[Path], tmp_path: Path
) -> None:
    spec = tiny_spec(epochs=2, logging_steps=1, warmup_ratio=0.25, learning_rate=0.01)
    events, _ = train_events(spec, tmp_path / "out", sentiment_files, model_dirs)
    rates = [data["learning_rate"] for data in of_type(events, "metrics")]
    assert rates[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])  # 16 steps, 4 of warmup
    assert rates[4:] == pytest.approx([0.01 * (16 - s + 1) / 12 for s in range(5, 17)])
    assert max(rates) == pytest.approx(0.01) and rates[-1] > 0


def test_schedule_edges() -> None:
    assert warmup_steps(100, 0.06) == 6
    assert warmup_steps(10, 0.0) == 0
    assert learning_rate_at(1, peak=1.0, total_steps=10, warmup=0) == 1.0
    assert learning_rate_at(10, peak=1.0, total_steps=10, warmup=10) == 1.0


def test_weight_decay_skips_biases_and_layer_norm() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decayed, plain = parameter_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 4])]
    assert len(plain["params"]) == 3  # linear bias, LayerNorm weight and bias
