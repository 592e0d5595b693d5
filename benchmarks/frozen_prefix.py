"""Frozen-prefix reuse against the same training without it, on all-MiniLM-L6-v2 and real text.

    .venv/bin/python -m benchmarks.frozen_prefix              # 945 / 315 docstrings, 3 epochs
    .venv/bin/python -m benchmarks.frozen_prefix --quick      # 64 / 32 texts, 2 epochs: a smoke run
    .venv/bin/python -m benchmarks.frozen_prefix --epochs 2 probe lora_top2

Four jobs that freeze the lower layers (tuning.frozen_prefix), each run three ways in the same
process, one after the other per job so that the machine's noise falls on all three:

- reuse: `hyperparameters.frozen_layers` "reuse", the frozen part's outputs computed once per example;
- recompute: "recompute", the same training (the frozen part without dropout) computed every step, the
  peer the ratio is taken against: the same training without reuse;
- dropout: "dropout", the frozen part as plain PyTorch runs it (dropout on), the accuracy to match.

The jobs: `partial` with the top 2 of 6 layers trainable; a linear probe (`partial` head_only); LoRA
(r 8, alpha 16, dropout 0.05, query/key/value/dense) on layers 4 and 5 only; and `full` under
`gradual_unfreeze` every 2 epochs, whose first stage trains the head alone and whose second (with 3
epochs) layer 5 too, so its cache is computed again one layer lower. The task is
benchmarks/docstrings.py's, the hyperparameters benchmarks/whole_job.py's (batch 16, lr 1e-3, max
length 96, seed 42; evaluation on the test set after every epoch and before the first step). Printed
per job and side: the whole job's wall seconds, the training loop's (`train_seconds`: steps,
evaluations and the cache), the whole job's CPU seconds (steadier than wall time on a shared machine),
the test accuracy, and reuse's ratios of the three times to recompute's.
"""

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import docstrings
from benchmarks.whole_job import HYPERPARAMETERS, MODEL, TARGETS
from tuning import Event, JobSpec, run

SIDES = ("recompute", "reuse", "dropout")
JOBS: dict[str, dict[str, Any]] = {
    "partial_top2": {"method": {"type": "partial", "last_n_layers": 2}},
    "probe": {"method": {"type": "partial", "head_only": True}},
    "lora_top2": {
        "method": {
            "type": "lora",
            "r": 8,
            "alpha": 16,
            "dropout": 0.05,
            "target_modules": TARGETS,
            "layers_to_transform": [4, 5],
        }
    },
    "gradual_unfreeze": {"method": {"type": "full"}, "gradual_unfreeze": {"every": 2}},
}


@dataclass(frozen=True)
class Measured:
    seconds: float  # the whole job: load, cache, train, evaluate, export
    cpu_seconds: float  # the same, in CPU time of this process: steadier on a shared machine
    train_seconds: float  # the training loop, evaluations and caching included
    accuracy: float  # on the test set, the last evaluation
    cached: str  # what the job's frozen_layers events said, briefly


def spec(job: str, side: str, epochs: int) -> JobSpec:
    hyperparameters = HYPERPARAMETERS | {"epochs": epochs, "frozen_layers": side}
    return JobSpec.model_validate(
        {
            "base_model": MODEL,
            "training_file": "train",
            "validation_file": "test",
            "hyperparameters": hyperparameters,
            **JOBS[job],
        }
    )


def measure(job: str, side: str, data: Path, out_dir: Path, epochs: int) -> Measured:
    events: list[Event] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run(
        spec(job, side, epochs),
        out_dir,
        training_path=data / "train.jsonl",
        validation_path=data / "test.jsonl",
        on_event=events.append,
    )
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    frozen = [event.data for event in events if "frozen_layers" in event.data]
    cached = ", ".join(
        f"{e['frozen_layers']} below layer {e['frozen_prefix_layers']}"
        + (f" (cached in {e['cache_seconds']:.1f} s)" if "cache_seconds" in e else "")
        for e in frozen
    )
    metrics = result.metrics
    return Measured(seconds, cpu_seconds, metrics["train_seconds"], metrics["val_accuracy"], cached or "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", help=f"jobs to run (default: all of {', '.join(JOBS)})")
    parser.add_argument("--quick", action="store_true", help="64 / 32 texts, 2 epochs: a smoke run")
    parser.add_argument("--epochs", type=int, help="default 3 (--quick 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    unknown = sorted(set(args.jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown jobs {unknown}; choose from {list(JOBS)}")
    epochs = args.epochs or (2 if args.quick else 3)
    rows: dict[str, dict[str, Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="deltatune-frozen-prefix-") as scratch:
        data = Path(scratch) / "data"
        docstrings.write(data, quick=args.quick)
        for job in args.jobs or JOBS:
            rows[job] = {}
            for side in SIDES:
                row = measure(job, side, data, Path(scratch) / f"{job}-{side}", epochs)
                rows[job][side] = row
                print(
                    f"{job} {side}: {row.seconds:.1f} s (training {row.train_seconds:.1f} s, "
                    f"CPU {row.cpu_seconds:.1f} s), "
                    f"accuracy {row.accuracy:.3f}; {row.cached}",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"frozen-prefix reuse, {epochs} epochs; ratios are reuse / recompute (the same training)")
    print("| job | side | wall seconds | training seconds | CPU seconds | test accuracy |")
    print("|---|---|---:|---:|---:|---:|")
    for job, sides in rows.items():
        for side, row in sides.items():
            print(
                f"| {job} | {side} | {row.seconds:.1f} | {row.train_seconds:.1f} | {row.cpu_seconds:.1f} "
                f"| {row.accuracy:.3f} |"
            )
    for job, sides in rows.items():
        reuse, recompute, dropout = sides["reuse"], sides["recompute"], sides["dropout"]
        print(
            f"{job}: wall {reuse.seconds / recompute.seconds:.2f}×, "
            f"training {reuse.train_seconds / recompute.train_seconds:.2f}×, "
            f"CPU {reuse.cpu_seconds / recompute.cpu_seconds:.2f}×; accuracy "
            f"{reuse.accuracy - recompute.accuracy:+.3f} vs recompute, "
            f"{reuse.accuracy - dropout.accuracy:+.3f} vs dropout"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
