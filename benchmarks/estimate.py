"""The dry run's estimate against the job it describes: every method of the catalogue, one row each.

    .venv/bin/python -m benchmarks.estimate                  # 2 epochs of 192 examples per method
    .venv/bin/python -m benchmarks.estimate --quick          # 1 epoch of 64 examples: a smoke run
    .venv/bin/python -m benchmarks.estimate --epochs 3 lora full
    .venv/bin/python -m benchmarks.estimate --measure-worker   # this machine's DELTATUNE_WORKER_* lines
    .venv/bin/python -m benchmarks.estimate --json run.json    # ... then, after a formula's change:
    .venv/bin/python -m benchmarks.estimate --reestimate run.json   # the same jobs, today's estimate

For each method's example job (`examples/jobs/<method>.json`, all-MiniLM-L6-v2 on the example data)
it makes the dry run's estimate as POST /v1/jobs does (the validation report read with the base
model's tokenizer, then `tuning.estimate`, no calibration by earlier jobs) on this machine's figures,
measured first as a worker would measure them (tuning.machine; `--settings`: the server's
DELTATUNE_WORKER_* settings instead), then runs the job with `tuning.run` in a fresh Python process,
so that the process's peak memory is that job's alone. Each row compares:

- time: estimated seconds against the job's own `train_seconds` metric (its first evaluation to its
  last, model loading and export excluded);
- memory: on the CPU the estimated peak against the job process's resident-set high-water mark
  (`ru_maxrss`: the libraries, the model, optimizer state and activations, all of it); on CUDA against
  `torch.cuda.max_memory_allocated`;
- parameters: the estimated trainable count against the job's `training started` event.

A ratio outside ±25 % (0.75 to 1.25) is flagged with `!`. The exit status is 0 either way: this
measures, it does not gate.
"""

import argparse
import json
import logging
import random
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from tuning.estimate import Estimate, Worker, estimate_job
from tuning.methods import METHODS
from tuning.models import resolve_base_model
from tuning.spec import JobSpec
from tuning.validation import validate_files

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
JOBS = EXAMPLES / "jobs"
ORDER = [name for name in METHODS if (JOBS / f"{name}.json").is_file()]
TOLERANCE = 0.25


@dataclass(frozen=True)
class Sizes:
    epochs: int
    training_examples: int
    validation_examples: int


FULL = Sizes(epochs=2, training_examples=192, validation_examples=64)
QUICK = Sizes(epochs=1, training_examples=64, validation_examples=32)


@dataclass(frozen=True)
class Row:
    method: str
    estimate: Estimate
    measured: dict[str, Any]  # what the job process reported (measure_job)


def example_spec(name: str, sizes: Sizes) -> JobSpec:
    raw = json.loads((JOBS / f"{name}.json").read_text())
    raw["hyperparameters"]["epochs"] = sizes.epochs
    return JobSpec.model_validate(raw)


def sample(source: Path, target: Path, count: int) -> Path:
    """The first `count` lines of a shuffled copy of `source`: labels stay mixed in a small sample."""
    lines = source.read_text().splitlines()
    random.Random(0).shuffle(lines)
    target.write_text("\n".join(lines[:count]) + "\n")
    return target


def dry_run_estimate(spec: JobSpec, training: Path, validation: Path, worker: Worker) -> Estimate:
    """What POST /v1/jobs with dry_run answers for `spec` on `worker`, without HTTP or a database."""
    base_path = resolve_base_model(spec.base_model, Settings().model_dirs)
    report = validate_files(spec, base_path, {"training_file": training, "validation_file": validation})
    return estimate_job(spec, base_path, report, worker=worker)


def measured_worker() -> Worker:
    """This machine's figures, measured in a fresh process as a worker measures them at its start
    (never read from a worker's cache: a benchmark measures the machine as it is now)."""
    from worker.machine_figures import measure_in_fresh_process

    return measure_in_fresh_process()


def settings_lines(worker: Worker) -> str:
    """`worker` as the server's settings (environment variables)."""
    return "\n".join(
        [
            f"DELTATUNE_WORKER_FLOPS={worker.float32_flops:.3g}",
            f"DELTATUNE_WORKER_BF16_FLOPS={worker.bf16_flops:.3g}",
            f"DELTATUNE_WORKER_LAYER_SECONDS={worker.layer_seconds:.3g}",
            f"DELTATUNE_WORKER_BRANCH_SECONDS={worker.branch_seconds:.3g}",
            f"DELTATUNE_WORKER_DROPOUT_SECONDS={worker.dropout_seconds:.3g}",
            f"DELTATUNE_WORKER_OPTIMIZER_PARAMETERS_PER_SECOND={worker.optimizer_parameters_per_second:.3g}",
            f"DELTATUNE_WORKER_EXCHANGE_BYTES_PER_SECOND={worker.exchange_bytes_per_second:.3g}",
            f"DELTATUNE_WORKER_BASELINE_BYTES={worker.baseline_bytes}",
        ]
    )


def measure_job(spec_path: Path, training: Path, validation: Path, result_path: Path) -> None:
    """Run one job in this process and write what it measured (called in a fresh process per job)."""
    import torch

    from tuning import Event, run

    spec = JobSpec.model_validate_json(spec_path.read_text())
    events: list[Event] = []
    result = run(
        spec,
        result_path.parent / "artifact",
        training_path=training,
        validation_path=validation,
        on_event=events.append,
    )
    counted = next(event.data for event in events if "trainable_parameters" in event.data)
    measured = {
        "train_seconds": result.metrics["train_seconds"],
        "eval_seconds": result.metrics.get("eval_seconds", 0.0),
        "steps": result.steps,
        "trainable_parameters": counted["trainable_parameters"],
        # Linux reports ru_maxrss in KiB: the process's resident high-water mark, everything included.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        measured["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    result_path.write_text(json.dumps(measured))


def _samples(sizes: Sizes, scratch: Path, name: str) -> tuple[Path, Path]:
    folder = scratch / name
    folder.mkdir()
    training = sample(EXAMPLES / "train.jsonl", folder / "train.jsonl", sizes.training_examples)
    validation = sample(EXAMPLES / "validation.jsonl", folder / "validation.jsonl", sizes.validation_examples)
    return training, validation


def run_row(name: str, sizes: Sizes, scratch: Path, worker: Worker) -> Row:
    folder = scratch / name
    training, validation = _samples(sizes, scratch, name)
    spec = example_spec(name, sizes)
    estimate = dry_run_estimate(spec, training, validation, worker)
    spec_path = folder / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    result_path = folder / "measured.json"
    command = [sys.executable, "-m", "benchmarks.estimate", "--measure-job"]
    subprocess.run([*command, str(spec_path), str(training), str(validation), str(result_path)], check=True)
    return Row(name, estimate, json.loads(result_path.read_text()))


def table(rows: list[Row]) -> str:
    lines = [
        "| method | steps | time est. | measured | ratio | memory est. | measured | ratio "
        "| trainable est. | counted | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        measured, estimate = row.measured, row.estimate
        memory = measured.get("peak_cuda_bytes", measured["peak_rss_bytes"])
        lines.append(
            f"| {row.method} | {measured['steps']} "
            f"| {estimate.seconds:.1f} s | {measured['train_seconds']:.1f} s "
            f"| {_ratio(estimate.seconds, measured['train_seconds'])} "
            f"| {estimate.peak_memory_bytes / 2**20:,.0f} MiB | {memory / 2**20:,.0f} MiB "
            f"| {_ratio(estimate.peak_memory_bytes, memory)} "
            f"| {estimate.trainable_parameters:,} | {measured['trainable_parameters']:,} "
            f"| {_ratio(estimate.trainable_parameters, measured['trainable_parameters'])} |"
        )
    return "\n".join(lines)


def _ratio(estimated: float, measured: float) -> str:
    ratio = estimated / measured if measured else float("inf")
    flag = "" if abs(ratio - 1) <= TOLERANCE else " !"
    return f"{ratio:.2f}×{flag}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("methods", nargs="*", help=f"methods to run (default: all of {', '.join(ORDER)})")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 64 examples: a smoke run")
    parser.add_argument("--epochs", type=int, help="epochs per job (default 2; 1 with --quick)")
    parser.add_argument("--json", type=Path, help="also write what was measured to this JSON file")
    parser.add_argument("--settings", action="store_true", help="the server's worker settings, not measured")
    parser.add_argument("--measure-worker", action="store_true", help="print this machine's worker settings")
    parser.add_argument(
        "--reestimate", type=Path, help="a --json file: its jobs' table with today's estimate"
    )
    parser.add_argument("--measure-job", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.measure_job:
        measure_job(*args.measure_job)
        return 0
    if args.measure_worker:
        print(settings_lines(measured_worker()))
        return 0
    unknown = sorted(set(args.methods) - set(ORDER))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {ORDER}")
    sizes = QUICK if args.quick else FULL
    if args.epochs is not None:
        sizes = Sizes(args.epochs, sizes.training_examples, sizes.validation_examples)
    if args.reestimate:
        return reestimate(args.reestimate)
    worker = _worker(args.settings)
    print(f"worker figures ({'settings' if args.settings else 'measured'}):\n{settings_lines(worker)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="deltatune-estimate-") as scratch:
        for name in args.methods or ORDER:
            rows.append(run_row(name, sizes, Path(scratch), worker))
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(_sizes_line(sizes))
    print(table(rows))
    if args.json:
        measured = {
            "sizes": sizes.__dict__,
            "worker": worker.__dict__,
            "jobs": {r.method: r.measured for r in rows},
        }
        args.json.write_text(json.dumps(measured, indent=2) + "\n")
    return 0


def reestimate(path: Path) -> int:
    """The table again for jobs a run measured (its --json), the estimates made by the code as it is now
    on the same samples and worker figures: a formula's change checked without running the jobs again."""
    stored = json.loads(path.read_text())
    sizes, figures = Sizes(**stored["sizes"]), stored["worker"]
    missing = sorted(set(Worker.__dataclass_fields__) - set(figures))
    if missing:  # a figure added since the run: measured now
        now = measured_worker()
        figures = figures | {name: getattr(now, name) for name in missing}
        print(f"measured now, missing from {path.name}: {', '.join(missing)}")
    worker = Worker(**figures)
    rows = []
    with tempfile.TemporaryDirectory(prefix="deltatune-estimate-") as scratch:
        for name, measured in stored["jobs"].items():
            training, validation = _samples(sizes, Path(scratch), name)
            rows.append(
                Row(name, dry_run_estimate(example_spec(name, sizes), training, validation, worker), measured)
            )
    print(f"re-estimated from {path.name}: {_sizes_line(sizes)}")
    print(table(rows))
    return 0


def _worker(from_settings: bool) -> Worker:
    if from_settings:
        from service.worker_figures import settings_worker

        return settings_worker(Settings())
    return measured_worker()


def _sizes_line(sizes: Sizes) -> str:
    return (
        f"{sizes.epochs} epochs, {sizes.training_examples} training and "
        f"{sizes.validation_examples} validation examples per job"
    )


if __name__ == "__main__":
    raise SystemExit(main())
