"""Write the small plain-text corpus in this folder: templated English sentences, `{"text"}` lines.

Run from this folder: `python make_corpus.py`. The sentences follow a few patterns with a limited
vocabulary, so even a tiny decoder visibly lowers its validation perplexity in a few epochs.
"""

import json
import random
from pathlib import Path

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry"]
ANIMALS = ["cat", "dog", "horse", "bird", "rabbit", "fox"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black"]
PLACES = ["the park", "the garden", "the market", "the river", "the school", "the library"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PATTERNS = [
    "{name} has a {colour} {animal}.",
    "On {day}, {name} walked to {place} with the {animal}.",
    "The {colour} {animal} sleeps near {place}.",
    "{name} saw a {animal} at {place} on {day}.",
    "Every {day}, {name} reads a book in {place}.",
]


def sentence(rng: random.Random, patterns: list[str] = PATTERNS) -> str:
    return rng.choice(patterns).format(
        name=rng.choice(NAMES),
        animal=rng.choice(ANIMALS),
        colour=rng.choice(COLOURS),
        place=rng.choice(PLACES),
        day=rng.choice(DAYS),
    )


def write(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = [" ".join(sentence(rng) for _ in range(rng.randint(1, 3))) for _ in range(count)]
    write_texts(path, lines)


def write_texts(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))


if __name__ == "__main__":
    here = Path(__file__).parent
    write(here / "train.jsonl", 200, seed=1)
    write(here / "validation.jsonl", 50, seed=2)
