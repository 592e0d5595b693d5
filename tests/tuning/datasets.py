"""Small, separable classification data written by the tests: each label has its own cue words."""

import json
import random
from collections.abc import Mapping
from pathlib import Path

CUES = {
    "positive": ["great", "wonderful", "love", "excellent", "happy", "delightful"],
    "negative": ["awful", "terrible", "hate", "bad", "sad", "boring"],
}
FILLER = ["the", "a", "movie", "was", "it", "plot", "story", "really"]


def sentiment_lines(count: int, *, seed: int, labels: Mapping[str, str | int] | None = None) -> list[str]:
    """`count` JSONL lines; `labels` renames the classes (e.g. to ints)."""
    rng = random.Random(seed)
    names = labels or {name: name for name in CUES}
    lines = []
    for _ in range(count):
        cue = rng.choice(list(CUES))
        words = rng.choices(CUES[cue], k=3) + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": names[cue]}))
    return lines


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
