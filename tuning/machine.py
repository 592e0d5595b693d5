"""The figures of a worker machine that the dry run's estimate reads (tuning.estimate.Worker), measured
in a few seconds with short runs of the operations training is made of: no job, no model download.

- FLOP/s in float32 and in bf16 (under autocast): a transformers BERT layer of width 384 on 16 × 32
  tokens, forward and backward, counted as tuning.estimate counts a layer, its fixed cost below taken
  out: matmuls with the elementwise work around them. The median of several timed repetitions after a
  warm-up; bf16 only on a CUDA GPU or a CPU with native bf16 (tuning.device), else 0.
- layer_seconds: the same layer at width 8 (so its arithmetic is nothing) on one token, forward and
  backward, divided by 3 (a backward launches about twice the forward's kernels): the fixed cost of a
  layer's operations, which dominates small batches.
- branch_seconds: one LoRA branch (tuning.methods.lora: its two rank-2 matmuls, scaling and add) at
  width 8 on one token, forward and backward, less the bare layer's, divided by 3 as above: the fixed
  cost of the small operations a low-rank branch adds to every adapted weight.
- dropout_seconds: what dropout (p 0.05) adds to a LoRA branch (r 8) on 16 × 32 × 384 float32
  activations, forward and backward, per activation, as the method runs it (on a CPU it draws only
  the dropped positions: tuning.methods.lora.dropped_down).
- optimizer parameters per second: torch's AdamW (foreach) step with gradient-norm clipping over 4 M
  parameters in 40 tensors.
- exchange bytes per second: two processes all-reduce 16 MB of float32 gradients as DDP does (gloo on
  the CPU, one thread each as torchrun gives them; nccl between two GPUs; a machine with one GPU has no
  such exchange: inf); each process sends the whole tensor's bytes, 2·(N−1)/N of them with N = 2.
- baseline bytes: this process's resident memory after importing torch, transformers and the method core.

A worker measures them when it starts, in a fresh process (`python -m tuning.machine`, which prints
them as one JSON line: worker/machine_figures.py), and publishes them for the dry run;
`python -m benchmarks.estimate --measure-worker` prints them as DELTATUNE_WORKER_* settings.
"""

import dataclasses
import json
import math
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import distributed

from tuning.device import attention_for, cpu_has_native_bf16, pick_device
from tuning.estimate import Worker

BATCH, WIDTH, HIDDEN, INTERMEDIATE = 16, 32, 384, 1536  # all-MiniLM-L6-v2's layer, a short-text batch
EXCHANGE_FLOATS = 4_000_000  # the gradients of a 4 M-parameter job: 16 MB


def measure_worker() -> Worker:
    """This machine's figures, on the device a job would train on."""
    import transformers  # noqa: F401  (what a job's process holds resident, for the baseline)

    import tuning.fit  # noqa: F401

    device = pick_device()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    native_bf16 = device.type == "cuda" or cpu_has_native_bf16()
    return Worker(
        device="cuda" if device.type == "cuda" else "cpu",
        float32_flops=layer_flops(device, torch.float32),
        bf16_flops=layer_flops(device, torch.bfloat16) if native_bf16 else 0.0,
        layer_seconds=layer_seconds(device),
        branch_seconds=branch_seconds(device),
        dropout_seconds=dropout_seconds(device),
        optimizer_parameters_per_second=optimizer_rate(device),
        exchange_bytes_per_second=exchange_rate(device),
        baseline_bytes=baseline if device.type == "cpu" else 0,
    )


def layer_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a BERT layer's forward and backward at width 384 on 16 × 32 tokens, its fixed cost
    (`layer_seconds`) taken out: matmuls with the elementwise work around them (softmax, GELU, layer
    norm, and under bf16 autocast the casts of the weights)."""
    seconds = _layer_step_seconds(device, HIDDEN, dtype) - 3 * layer_seconds(device)
    tokens = BATCH * WIDTH
    weights = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTERMEDIATE
    # Forward 2·M·t + 4·h·p, backward twice the forward: tuning.estimate's count for a trained layer.
    flops = 3 * (2 * weights * tokens + 4 * HIDDEN * BATCH * WIDTH**2)
    return flops / max(seconds, 1e-9)


def layer_seconds(device: torch.device) -> float:
    """One layer's forward ops on a batch when their arithmetic is nothing (width 8, one token)."""
    return _layer_step_seconds(device, 8, torch.float32, batch=1, width=1) / 3


def branch_seconds(device: torch.device) -> float:
    """What a LoRA branch adds to a frozen layer's forward ops when their arithmetic is nothing."""
    from tuning.methods.lora.model import LoraLinear

    bare = torch.nn.Linear(8, 8).to(device).requires_grad_(False)
    adapted = LoraLinear.wrap(torch.nn.Linear(8, 8).to(device), r=2, alpha=4)
    states = torch.randn(1, 8, device=device, requires_grad=True)

    def forward_backward(layer: torch.nn.Module) -> Callable[[], None]:
        return lambda: layer(states).sum().backward()

    added = _median_seconds(forward_backward(adapted), device) - _median_seconds(
        forward_backward(bare), device
    )
    return max(added, 0.0) / 3


def dropout_seconds(device: torch.device) -> float:
    """What dropout (p 0.05) adds to a LoRA branch's forward and backward, per element of its input."""
    from tuning.methods.lora.model import LoraLinear

    states = torch.randn(BATCH * WIDTH, HIDDEN, device=device, requires_grad=True)

    def forward_backward(dropout: float) -> Callable[[], None]:
        layer = LoraLinear.wrap(torch.nn.Linear(HIDDEN, HIDDEN).to(device), r=8, alpha=16, dropout=dropout)
        return lambda: layer(states).sum().backward()

    added = _median_seconds(forward_backward(0.05), device) - _median_seconds(forward_backward(0.0), device)
    return max(added, 0.0) / states.numel()


def _layer_step_seconds(
    device: torch.device, hidden: int, dtype: torch.dtype, *, batch: int = 16, width: int = 32
) -> float:
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = BertConfig(
        hidden_size=hidden, num_attention_heads=max(hidden // 64, 2), intermediate_size=4 * hidden
    )
    config._attn_implementation = attention_for(device)  # what a job trains with
    layer = BertLayer(config).to(device)
    states = torch.randn(batch, width, hidden, device=device, requires_grad=True)

    def forward_backward() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            output = layer(states)[0]
        output.float().sum().backward()

    return _median_seconds(forward_backward, device)


def optimizer_rate(device: torch.device) -> float:
    parameters = [torch.nn.Parameter(torch.randn(100_000, device=device)) for _ in range(40)]
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter)
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    return 40 * 100_000 / _median_seconds(step, device)


def exchange_rate(device: torch.device) -> float:
    """Bytes per second each of two processes sends in an all-reduce of float32 gradients."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return math.inf
    with tempfile.TemporaryDirectory(prefix="deltatune-exchange-") as folder:
        result = Path(folder) / "seconds"
        torch.multiprocessing.spawn(
            _exchange, args=(str(Path(folder) / "store"), str(result), device.type), nprocs=2
        )
        seconds = float(result.read_text())
    return 4 * EXCHANGE_FLOATS / seconds


def _exchange(rank: int, store: str, result: str, device_type: str) -> None:
    """One of the two processes of `exchange_rate`: rank 0 writes the median all-reduce's seconds."""
    on_cuda = device_type == "cuda"
    distributed.init_process_group(
        "nccl" if on_cuda else "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    try:
        device = torch.device("cuda", rank) if on_cuda else torch.device("cpu")
        if on_cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(1)  # torchrun's OMP_NUM_THREADS for several processes
        gradients = torch.randn(EXCHANGE_FLOATS, device=device)
        seconds = _median_seconds(lambda: distributed.all_reduce(gradients), device, repeats=5)
        if rank == 0:
            Path(result).write_text(repr(seconds))
    finally:
        distributed.destroy_process_group()


def _median_seconds(work: Callable[[], object], device: torch.device, *, repeats: int = 10) -> float:
    for _ in range(3):  # warm-up: kernels chosen, memory allocated, lazy imports done
        work()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        work()
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    """This machine's figures as one JSON line (inf, a single GPU's exchange rate, as `Infinity`)."""
    print(json.dumps(dataclasses.asdict(measure_worker())))


if __name__ == "__main__":
    main()
