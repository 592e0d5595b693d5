"""One job on 1 and on N processes (`resources.processes`, torch.distributed's DDP), side by side.

    .venv/bin/python -m benchmarks.processes                   # goal 1's LoRA job, 1 and 2 processes
    .venv/bin/python -m benchmarks.processes --quick           # 64 / 32 texts, 1 epoch: a smoke run
    .venv/bin/python -m benchmarks.processes --method full --processes 1 2 4   # on a machine with 4 GPUs

The job is benchmarks/whole_job.py's (all-MiniLM-L6-v2, LoRA r=8 on query/key/value/dense, batch 16,
lr 1e-3, max length 96, 3 epochs; `--method full` fine-tunes every weight instead) on its docstrings
task. One process runs `tuning.run`; N processes run `tuning.launch.run_in_processes`, which starts
torchrun as a worker does: gloo on the CPU, each process with one torch thread (torchrun's default),
so N processes share the cores that one process's threads would; nccl and one GPU each on CUDA. Each
global batch is split among the processes, so the schedule is the same; the model's own dropout
draws other numbers per process, so accuracies agree within noise, not exactly
(tests/tuning/test_distributed.py checks equal weights on a model without dropout). On a CPU shared
with other work one process's OpenMP threads spin waiting for each other (see benchmarks/step.py),
which one-thread processes do not: compare CPU sides on an idle machine. Printed per side: the
whole job's wall seconds (torchrun's start and every process's imports included), the training
loop's `train_seconds`, its training tokens per second, and the test accuracy.
"""

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import docstrings
from benchmarks.whole_job import HYPERPARAMETERS, MODEL, TARGETS
from tuning import JobSpec, RunResult, run
from tuning.launch import run_in_processes

METHODS: dict[str, dict[str, Any]] = {
    "lora": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": TARGETS},
    "full": {"type": "full"},
}


def job_spec(method: str, processes: int, epochs: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": MODEL,
            "training_file": "train",
            "validation_file": "test",
            "method": METHODS[method],
            "hyperparameters": {**HYPERPARAMETERS, "epochs": epochs},
            "resources": {"processes": processes},
        }
    )


def train(spec: JobSpec, data: Path, out_dir: Path) -> tuple[float, RunResult]:
    training_path, validation_path = data / "train.jsonl", data / "test.jsonl"
    started = time.perf_counter()
    if spec.resources.processes == 1:
        result = run(spec, out_dir, training_path=training_path, validation_path=validation_path)
    else:
        result = run_in_processes(spec, out_dir, training_path=training_path, validation_path=validation_path)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 / 32 texts, 1 epoch: a smoke run")
    parser.add_argument("--method", choices=sorted(METHODS), default="lora")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, help="default 3 (--quick 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    epochs = args.epochs or (1 if args.quick else 3)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"{args.method} on {MODEL}, {epochs} epoch(s), on {device}")
    print("| processes | wall s | train_seconds | training tokens/s | test accuracy |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="deltatune-processes-bench-") as scratch:
        data = Path(scratch) / "data"
        docstrings.write(data, quick=args.quick)
        for processes in args.processes:
            spec = job_spec(args.method, processes, epochs)
            seconds, result = train(spec, data, Path(scratch) / f"out-{processes}")
            tokens = result.trained_tokens
            train_seconds = result.metrics["train_seconds"]
            print(
                f"| {processes} | {seconds:.1f} | {train_seconds:.1f} | {tokens / train_seconds:,.0f} "
                f"| {result.metrics['val_accuracy']:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
