"""Small learnable data for multi-label and regression, written by the tests.

Multi-label: each topic has its own cue words; an example mentions 0–3 topics and carries exactly
those labels. Regression: the target is how many cue words a text holds, so the text determines it.
"""

import json
import random

TOPICS = {
    "sport": ["football", "goal", "match", "team"],
    "music": ["guitar", "song", "concert", "band"],
    "food": ["pizza", "bread", "cheese", "soup"],
}
FILLER = ["the", "a", "was", "it", "day", "there", "then", "we"]
CUE_WORDS = ["great", "excellent", "wonderful", "love"]


def multi_label_lines(count: int, *, seed: int) -> list[str]:
    """`count` JSONL lines `{"text", "labels"}`; two cue words per topic an example carries."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        topics = sorted(rng.sample(list(TOPICS), k=rng.randint(0, 3)))
        words = [word for topic in topics for word in rng.choices(TOPICS[topic], k=2)]
        words += rng.choices(FILLER, k=6 - len(words) if len(words) < 6 else 1)
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "labels": topics}))
    return lines


def regression_lines(count: int, *, seed: int, integer: bool = False) -> list[str]:
    """`count` JSONL lines `{"text", "label"}`: the label is the number of cue words (0–4) in the text.

    Floats (`3.0`) make it a regression file; `integer` writes ints, a classification file that only
    `problem_type: regression` reads as targets.
    """
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        cues = rng.randint(0, 4)
        words = rng.choices(CUE_WORDS, k=cues) + rng.choices(FILLER, k=6 - cues)
        rng.shuffle(words)
        label: float | int = cues if integer else float(cues)
        lines.append(json.dumps({"text": " ".join(words), "label": label}))
    return lines
