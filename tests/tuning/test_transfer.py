"""Real transfer: a tiny BERT fine-tuned on a source task, exported as a plain base model, learns a
related target task from few examples better than the same random-initialised BERT does.

Source: sentiment from cue words, many examples. Target: the same cues under other label names
(liked, disliked), 16 examples. Both target runs get the same budget, seed and data; the baseline
starts from the random-initialised tiny BERT the source job started from.
"""

import json
import random
from pathlib import Path

import pytest

from tuning.job_model import export_plain_model
from tuning.run import run
from tuning.spec import JobSpec

SEEDS = (0, 1, 2)

POSITIVE = ["great", "wonderful", "love", "excellent", "happy", "delightful"]
NEGATIVE = ["awful", "terrible", "hate", "bad", "sad", "boring"]
FILLER = ["the", "a", "movie", "was", "it", "plot", "story", "really"]
CUES = {"positive": POSITIVE, "negative": NEGATIVE}
# The target's names for the source's classes. Labels are indexed by sorted name, and these sort in the
# source's order (negative, positive), so the source job's head carries over along with its encoder.
TARGET_NAMES = {"positive": "liked", "negative": "disliked"}


def cue_lines(count: int, *, seed: int, names: dict[str, str] | None = None) -> list[str]:
    """Balanced examples: two cue words of their sentiment among filler; `names` renames the labels."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        sentiment = list(CUES)[index % len(CUES)]
        words = rng.choices(CUES[sentiment], k=2) + rng.choices(FILLER, k=4)
        rng.shuffle(words)
        label = names[sentiment] if names else sentiment
        lines.append(json.dumps({"text": " ".join(words), "label": label}))
    return lines


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def spec(base_model: str, *, epochs: int, learning_rate: float, seed: int) -> JobSpec:
    return JobSpec(
        base_model=base_model,
        training_file="training",
        validation_file="validation",
        method={"type": "full"},
        hyperparameters={"epochs": epochs, "batch_size": 8, "learning_rate": learning_rate, "seed": seed},
    )


@pytest.mark.slow
def test_a_source_jobs_model_transfers_to_a_related_task(tmp_path: Path, tiny_bert_dir: Path) -> None:
    model_dirs = [tiny_bert_dir.parent]
    source = run(
        spec("tiny-bert", epochs=3, learning_rate=1e-3, seed=0),
        tmp_path / "source",
        training_path=write(tmp_path / "source.jsonl", cue_lines(320, seed=1)),
        validation_path=write(tmp_path / "source-val.jsonl", cue_lines(60, seed=2)),
        model_dirs=model_dirs,
    )
    assert source.metrics["val_accuracy"] > 0.95, source.metrics
    job_models = tmp_path / "job-models"
    export_plain_model(tmp_path / "source", job_models / "source-job", model_dirs)

    training = write(tmp_path / "target.jsonl", cue_lines(16, seed=3, names=TARGET_NAMES))
    validation = write(tmp_path / "target-val.jsonl", cue_lines(150, seed=4, names=TARGET_NAMES))
    scratch, transferred = [], []
    for seed in SEEDS:
        for base, scores in (("tiny-bert", scratch), ("source-job", transferred)):
            result = run(
                spec(base, epochs=12, learning_rate=5e-3, seed=seed),
                tmp_path / f"target-{base}-{seed}",
                training_path=training,
                validation_path=validation,
                model_dirs=[job_models, *model_dirs],
            )
            scores.append(result.metrics["val_accuracy"])
            if base == "source-job":
                # What the source job learned is there before the first target step.
                assert result.metrics["initial_val_accuracy"] > 0.9, result.metrics
    scratch_mean, transferred_mean = sum(scratch) / len(SEEDS), sum(transferred) / len(SEEDS)
    print(
        f"target val accuracy: from scratch {scratch} mean {scratch_mean:.3f}; "
        f"transferred {transferred} mean {transferred_mean:.3f}"
    )
    assert transferred_mean > scratch_mean + 0.1
