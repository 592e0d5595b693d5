"""Every method of the catalogue on the example data with all-MiniLM-L6-v2: one row per method.

    .venv/bin/python -m benchmarks.methods                 # every job in examples/jobs/, as written
    .venv/bin/python -m benchmarks.methods --epochs 1 lora adapter

Each row: trainable parameters, artifact size, validation accuracy before and after, training
time, and the ratios of parameters and time to the entire fine-tune (`full`) measured in the same
run, the peer every other method is an alternative to. The jobs are the example specs users POST
(`examples/jobs/<method>.json`), so the table describes what a user gets.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tuning import Event, JobSpec, run
from tuning.methods import METHODS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
JOBS = EXAMPLES / "jobs"
ORDER = list(METHODS)  # every registered method, in the catalogue's order


@dataclass(frozen=True)
class Row:
    method: str
    trainable_parameters: int
    total_parameters: int
    artifact_bytes: int  # the delta itself: extras (merged/, lora/, tokenizer/) are counted apart
    extra_bytes: int
    initial_accuracy: float
    accuracy: float
    seconds: float  # wall time of the whole job: load, train, evaluate, export


def example_spec(name: str, *, epochs: int | None = None) -> JobSpec:
    """The example job for method `name`, with the example files' placeholders and an optional budget."""
    raw = json.loads((JOBS / f"{name}.json").read_text())
    if epochs is not None:
        raw["hyperparameters"]["epochs"] = epochs
    return JobSpec.model_validate(raw)


def run_example(name: str, out_dir: Path, *, epochs: int | None = None) -> Row:
    spec = example_spec(name, epochs=epochs)
    events: list[Event] = []
    started = time.perf_counter()
    result = run(
        spec,
        out_dir,
        training_path=EXAMPLES / "train.jsonl",
        validation_path=EXAMPLES / "validation.jsonl",
        on_event=events.append,
    )
    seconds = time.perf_counter() - started
    sizes = {name: (out_dir / name).stat().st_size for name in result.files}
    extras = sum(size for name, size in sizes.items() if "/" in name)
    counts = next(event.data for event in events if "trainable_parameters" in event.data)
    return Row(
        method=name,
        trainable_parameters=counts["trainable_parameters"],
        total_parameters=counts["total_parameters"],
        artifact_bytes=sum(sizes.values()) - extras,
        extra_bytes=extras,
        initial_accuracy=result.metrics["initial_val_accuracy"],
        accuracy=result.metrics["val_accuracy"],
        seconds=seconds,
    )


def table(rows: list[Row]) -> str:
    peer = next((row for row in rows if row.method == "full"), None)
    lines = [
        "| method | trainable params | % of model | vs full | artifact | extras "
        "| val acc before → after | time | vs full |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        params_ratio = f"{row.trainable_parameters / peer.trainable_parameters:.4f}×" if peer else "n/a"
        time_ratio = f"{row.seconds / peer.seconds:.2f}×" if peer else "n/a"
        lines.append(
            f"| {row.method} | {row.trainable_parameters:,} "
            f"| {100 * row.trainable_parameters / row.total_parameters:.2f}% | {params_ratio} "
            f"| {_size(row.artifact_bytes)} | {_size(row.extra_bytes) if row.extra_bytes else '-'} "
            f"| {100 * row.initial_accuracy:.1f}% → {100 * row.accuracy:.1f}% "
            f"| {row.seconds:.0f} s | {time_ratio} |"
        )
    return "\n".join(lines)


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help=f"methods to run (default: all of {', '.join(ORDER)})")
    parser.add_argument("--epochs", type=int, help="override every example's epochs (a smaller budget)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    unknown = sorted(set(args.methods) - set(ORDER))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {ORDER}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="deltatune-bench-") as scratch:
        for name in args.methods or ORDER:
            rows.append(run_example(name, Path(scratch) / name, epochs=args.epochs))
            print(f"{name}: {rows[-1].accuracy:.1%} in {rows[-1].seconds:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
