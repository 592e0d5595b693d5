"""A real, variable-length text classification task: which library a docstring comes from.

    .venv/bin/python -m benchmarks.docstrings OUT_DIR     # writes OUT_DIR/train.jsonl and test.jsonl
    .venv/bin/python -m benchmarks.docstrings OUT_DIR --libraries tools   # the second task

The texts are the docstrings (module, class and function) of four libraries installed beside
deltatune, read from their source files with `ast` (nothing is imported or run), and the label is
the library. Two sets of four: `service` (the default, the whole-job benchmark's) is `torch`
(tensors and layers), `sqlalchemy` (SQL and the ORM), `celery` (tasks, workers, brokers; kombu's
docstrings count as celery's, the messaging half of it) and `pydantic` (models and validation);
`tools`, a second task that no example or default was written for, is `numpy` (arrays and their
maths), `redis` (a key-value server's commands), `aws` (boto3 and botocore, the AWS SDK) and `rich`
(terminal rendering). Docstrings are real prose written by many people: a few words ("Return the dtype.") to
pages with examples, so lengths vary as a real task's do, and many are generic ("Returns a copy of
self.") and cannot be told apart, which keeps accuracy below 100%.

Each text is one docstring with its whitespace collapsed, at least 3 words, cut to its first 2,000
characters; duplicates are dropped. Per library the docstrings are ordered by the sha256 of the
text (with a fixed salt), so the choice is deterministic for the installed versions and independent
of the file system's order; 315 are taken per library and the 1,260 split 945 train / 315 test by
the same hash. `--quick` takes 64 train / 32 test from each library's first 40 files, for a smoke
run.
"""

import argparse
import ast
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import util
from pathlib import Path

SALT = "deltatune-docstrings-1"
# Label → the packages whose docstrings carry it, per set.
LIBRARY_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "service": {
        "torch": ("torch",),
        "sqlalchemy": ("sqlalchemy",),
        "celery": ("celery", "kombu"),
        "pydantic": ("pydantic",),
    },
    "tools": {
        "numpy": ("numpy",),
        "redis": ("redis",),
        "aws": ("boto3", "botocore"),
        "rich": ("rich",),
    },
}
PER_LIBRARY = 315
TRAIN, TEST = 945, 315
MAX_CHARS = 2000
MIN_WORDS = 3


@dataclass(frozen=True)
class Split:
    train: list[dict[str, str]]
    test: list[dict[str, str]]


def _digest(text: str) -> str:
    return hashlib.sha256(f"{SALT}:{text}".encode()).hexdigest()


def package_root(name: str) -> Path:
    found = util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise SystemExit(f"package {name} is not installed")
    return Path(next(iter(found.submodule_search_locations)))


def docstrings(root: Path, max_files: int | None = None) -> Iterator[str]:
    """Every module, class and function docstring under `root` (its first `max_files` files in name
    order, if given), whitespace collapsed."""
    for path in sorted(root.rglob("*.py"))[:max_files]:
        if "test" in path.relative_to(root).parts[0:-1] or path.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_docstring(node)
                if text:
                    yield re.sub(r"\s+", " ", text).strip()[:MAX_CHARS]


def build(
    per_library: int = PER_LIBRARY,
    train: int = TRAIN,
    test: int = TEST,
    *,
    max_files: int | None = None,
    libraries: str = "service",
) -> Split:
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for label, packages in LIBRARY_SETS[libraries].items():
        texts = {
            text
            for package in packages
            for text in docstrings(package_root(package), max_files)
            if len(text.split()) >= MIN_WORDS
        }
        unique = sorted(texts - seen, key=_digest)[:per_library]
        if len(unique) < per_library:
            raise SystemExit(f"{label}: only {len(unique)} docstrings")
        seen.update(unique)
        rows.extend({"text": text, "label": label} for text in unique)
    rows.sort(key=lambda row: _digest(row["label"] + row["text"]))
    return Split(rows[:train], rows[train : train + test])


def write(out_dir: Path, *, quick: bool = False, libraries: str = "service") -> tuple[Path, Path]:
    split = build(24, 64, 32, max_files=40, libraries=libraries) if quick else build(libraries=libraries)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.jsonl", out_dir / "test.jsonl"
    for path, rows in zip(paths, (split.train, split.test), strict=True):
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="64 train / 32 test texts")
    parser.add_argument("--libraries", choices=sorted(LIBRARY_SETS), default="service", help="which four")
    args = parser.parse_args(argv)
    for path in write(args.out_dir, quick=args.quick, libraries=args.libraries):
        data = path.read_bytes()
        lines = data.count(b"\n")
        print(f"{path.name}: {lines} lines, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
