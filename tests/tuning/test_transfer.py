"""Real transfer: a tiny BERT fine-tuned on a source task, exported as a plain base model, learns a
related target task from few examples better than the same random-initialised BERT does.

Source: four groups of cue words, many examples. Target: which of two tones (each two of the groups)
a text has, 16 examples, through a new two-way head. Both target runs get the same budget, seed and
data; the baseline starts from the random-initialised tiny BERT the source job started from.
"""

import json
import random
from pathlib import Path

import pytest

from tuning.artifacts.plain_model import export_plain_model
from tuning.run import run
from tuning.spec import JobSpec

SEEDS = (0, 1, 2)

# Four cue-word groups. The source task names all four; the target asks a coarser question of the
# same words (is the tone warm or cold?) with two labels, so the target job gets a new, randomly
# initialised head and only the source's encoder can help it.
# Six words a group; the source's examples use them all.
CUES = {
    "joy": ["great", "wonderful", "delightful", "cheerful", "bright", "glad"],
    "love": ["love", "adore", "cherish", "dear", "sweet", "tender"],
    "anger": ["awful", "hate", "furious", "angry", "rage", "mad"],
    "boredom": ["boring", "dull", "tedious", "bland", "slow", "flat"],
}
TONE = {"joy": "warm", "love": "warm", "anger": "cold", "boredom": "cold"}
FILLER = ["the", "a", "movie", "was", "it", "plot", "story", "really"]


def cue_lines(
    count: int, *, seed: int, names: dict[str, str] | None = None, words_of_group: slice = slice(None)
) -> list[str]:
    """Balanced examples: two cue words of one group among filler; `names` maps groups to labels,
    `words_of_group` picks which of each group's words may appear."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        group = list(CUES)[index % len(CUES)]
        words = rng.choices(CUES[group][words_of_group], k=2) + rng.choices(FILLER, k=4)
        rng.shuffle(words)
        label = names[group] if names else group
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
        spec("tiny-bert", epochs=10, learning_rate=2e-3, seed=0),
        tmp_path / "source",
        training_path=write(tmp_path / "source.jsonl", cue_lines(320, seed=1)),
        validation_path=write(tmp_path / "source-val.jsonl", cue_lines(60, seed=2)),
        model_dirs=model_dirs,
    )
    assert source.metrics["val_accuracy"] > 0.95, source.metrics
    job_models = tmp_path / "job-models"
    export_plain_model(tmp_path / "source", job_models / "source-job", model_dirs)

    # The target's training lines use two words of each group, its validation lines only the other
    # four: what a word means must come from somewhere else than the target's own data.
    training = write(tmp_path / "target.jsonl", cue_lines(16, seed=3, names=TONE, words_of_group=slice(0, 2)))
    validation = write(
        tmp_path / "target-val.jsonl", cue_lines(160, seed=4, names=TONE, words_of_group=slice(2, None))
    )
    scratch, transferred = [], []
    for seed in SEEDS:
        for base, scores in (("tiny-bert", scratch), ("source-job", transferred)):
            result = run(
                spec(base, epochs=20, learning_rate=5e-3, seed=seed),
                tmp_path / f"target-{base}-{seed}",
                training_path=training,
                validation_path=validation,
                model_dirs=[job_models, *model_dirs],
            )
            scores.append(result.metrics["val_accuracy"])
    scratch_mean, transferred_mean = sum(scratch) / len(SEEDS), sum(transferred) / len(SEEDS)
    print(
        f"target val accuracy: from scratch {scratch} mean {scratch_mean:.3f}; "
        f"transferred {transferred} mean {transferred_mean:.3f}"
    )
    # From scratch the unseen words mean nothing (about chance); the source job's encoder knows them.
    # Measured: scratch 0.494 / 0.419 / 0.488, transferred 0.981 / 0.619 / 0.656.
    assert transferred_mean > scratch_mean + 0.15
    assert min(transferred) > max(scratch)
