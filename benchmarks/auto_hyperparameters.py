"""`"auto"` hyperparameters on a task nobody tuned them for, against a frozen mean-pool linear probe.

    .venv/bin/python -m benchmarks.auto_hyperparameters                  # auto, every method
    .venv/bin/python -m benchmarks.auto_hyperparameters --examples       # the example specs, 1 epoch
    .venv/bin/python -m benchmarks.auto_hyperparameters --choose lora    # on a validation cut
    .venv/bin/python -m benchmarks.auto_hyperparameters --max-seq-length 128   # the tokens the probe reads
    .venv/bin/python -m benchmarks.auto_hyperparameters --choose --learning-rate 3e-3 bitfit  # a rate to try

The task is benchmarks/docstrings.py's second set (`tools`: numpy, redis, aws, rich; 945 training
and 315 test docstrings of varied length), which no example spec or default was written for. The
bar is a frozen mean-pool linear probe: all-MiniLM-L6-v2's last hidden states averaged over each
text's first 128 tokens (as sentence-transformers pools it; the example specs' jobs read 64 unless
`--max-seq-length` says otherwise), then a multinomial logistic regression fitted to
convergence (L-BFGS) on the training texts. Each method's job is its example spec
(`examples/jobs/<method>.json`) with `epochs` and `learning_rate` left out, so both are "auto"; with
`--examples`, the spec as written at 1 epoch (the issue's table). Each row: test accuracy, the job's
wall time (load, train, evaluate, export) and its ratio to the LoRA job's in the same run.

`--choose` trains on the first 709 training texts and reports on the other 236, so a rule can be
chosen without looking at the test split the default run reports.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import docstrings
from benchmarks.methods import ORDER, example_spec
from tuning import Event, JobSpec, run
from tuning.models import BUNDLED_MODEL_ID, resolve_base_model
from tuning.transferability import MAX_LENGTH, label_indices, mean_pooled_features

CHOOSE_TRAIN = 709  # 3/4 of the training texts; the rest is the validation cut


@dataclass(frozen=True)
class Row:
    method: str
    initial_accuracy: float  # the untrained head's
    accuracy: float
    seconds: float
    epochs: int
    learning_rate: float


def read_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def task_files(folder: Path, *, choose: bool) -> tuple[Path, Path]:
    """The tools task's training and reporting files: train/test, or with `choose` a validation cut."""
    train, test = docstrings.write(folder / "tools", libraries="tools")
    if not choose:
        return train, test
    rows = read_rows(train)
    return (
        write_rows(folder / "choose-train.jsonl", rows[:CHOOSE_TRAIN]),
        write_rows(folder / "choose-validation.jsonl", rows[CHOOSE_TRAIN:]),
    )


def probe_accuracy(train: Path, test: Path) -> float:
    """A frozen mean-pool linear probe's test accuracy: logistic regression on fixed features."""
    path = resolve_base_model(BUNDLED_MODEL_ID, ())
    train_rows, test_rows = read_rows(train), read_rows(test)
    x = mean_pooled_features(path, [row["text"] for row in train_rows]).double()
    x_test = mean_pooled_features(path, [row["text"] for row in test_rows]).double()
    y = label_indices([row["label"] for row in train_rows])
    y_test = label_indices([row["label"] for row in test_rows])
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x, x_test = (x - mean) / std, (x_test - mean) / std
    classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        # A light L2 (1e-3, fixed, not searched): the features are standardised, 945 texts, 384 dims.
        value = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 1e-3 * weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        return float(((x_test @ weight + bias).argmax(1) == y_test).double().mean())


def job_spec(
    method: str, *, examples: bool, max_seq_length: int | None = None, learning_rate: float | None = None
) -> JobSpec:
    """The example spec, at 1 epoch (`examples`) or with its epochs and rate left to "auto";
    `max_seq_length` in place of the example's 64 (128: what the probe reads); `learning_rate` in
    place of auto's (a rate to try before making it auto's)."""
    raw = example_spec(method, epochs=1 if examples else None).model_dump(mode="json", exclude_unset=True)
    if not examples:
        for name in ("epochs", "learning_rate"):
            raw["hyperparameters"].pop(name, None)
    if max_seq_length is not None:
        raw["hyperparameters"]["max_seq_length"] = max_seq_length
    if learning_rate is not None:
        raw["hyperparameters"]["learning_rate"] = learning_rate
    return JobSpec.model_validate(raw)


def run_job(
    method: str,
    out_dir: Path,
    train: Path,
    test: Path,
    *,
    examples: bool,
    max_seq_length: int | None = None,
    learning_rate: float | None = None,
) -> Row:
    events: list[Event] = []
    started = time.perf_counter()
    spec = job_spec(method, examples=examples, max_seq_length=max_seq_length, learning_rate=learning_rate)
    result = run(
        spec,
        out_dir,
        training_path=train,
        validation_path=test,
        on_event=events.append,
    )
    seconds = time.perf_counter() - started
    chosen = next((event.data for event in events if "resolved_hyperparameters" in event.data), {})
    resolved = chosen.get("resolved_hyperparameters", {})
    return Row(
        method,
        result.metrics["initial_val_accuracy"],
        result.metrics["val_accuracy"],
        seconds,
        resolved.get("epochs", spec.hyperparameters.epochs),
        resolved.get("learning_rate", spec.hyperparameters.learning_rate),
    )


def table(rows: list[Row], probe: float) -> str:
    lora = next((row.seconds for row in rows if row.method == "lora"), None)
    lines = [
        "| method | accuracy | vs probe | epochs | learning rate | wall time | vs lora |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| frozen mean-pool probe | {probe:.3f} | | | | | |",
    ]
    for row in rows:
        ratio = f"{row.seconds / lora:.2f}×" if lora else "n/a"
        lines.append(
            f"| {row.method} | {row.accuracy:.3f} | {row.accuracy - probe:+.3f} | {row.epochs} "
            f"| {row.learning_rate:.2g} | {row.seconds:.0f} s | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", help=f"methods to run (default: all of {', '.join(ORDER)})")
    parser.add_argument("--examples", action="store_true", help="the example specs as written, 1 epoch")
    parser.add_argument("--choose", action="store_true", help="train on 709, report on 236 held-out")
    parser.add_argument("--json", type=Path, help="also write the rows and the probe to this JSON file")
    parser.add_argument(
        "--max-seq-length",
        type=int,
        help=f"the jobs' max_seq_length in place of the examples' 64 ({MAX_LENGTH}: the probe's)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="every job at this rate instead of auto's (epochs stay auto)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    unknown = sorted(set(args.methods) - set(ORDER))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {ORDER}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="deltatune-auto-") as scratch:
        train, test = task_files(Path(scratch), choose=args.choose)
        probe = probe_accuracy(train, test)
        print(f"probe: {probe:.3f}", file=sys.stderr, flush=True)
        for method in args.methods or ORDER:
            rows.append(
                run_job(
                    method,
                    Path(scratch) / method,
                    train,
                    test,
                    examples=args.examples,
                    max_seq_length=args.max_seq_length,
                    learning_rate=args.learning_rate,
                )
            )
            row = rows[-1]
            print(f"{method}: {row.accuracy:.3f} in {row.seconds:.0f} s", file=sys.stderr, flush=True)
    print(table(rows, probe))
    if args.json:
        payload = {"probe": probe, "rows": [row.__dict__ for row in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
