"""The figures of a worker machine that the dry run's estimate reads (tuning.estimate.Worker), measured
in a few seconds with short runs of the operations training is made of: no job, no model download.

- FLOP/s in float32 and in bf16 (under autocast): a transformers BERT layer of width 384 on 16 × 32
  tokens, forward and backward, counted as tuning.estimate counts a layer, its fixed cost below taken
  out: matmuls with the elementwise work around them. The median of several timed repetitions after a
  warm-up; bf16 only on a CUDA GPU or a CPU with native bf16 (tuning.device), else 0.
- layer_seconds: the same layer at width 8 (so its arithmetic is nothing) on one token, forward and
  backward, divided by 3 (a backward launches about twice the forward's kernels): the fixed cost of a
  layer's operations, which dominates small batches.
- optimizer parameters per second: torch's AdamW (foreach) step with gradient-norm clipping over 4 M
  parameters in 40 tensors.
- baseline bytes: this process's resident memory after importing torch, transformers and the method core.

`python -m benchmarks.estimate --measure-worker` prints them as DELTATUNE_WORKER_* settings.
"""

import resource
import statistics
import time
from collections.abc import Callable

import torch

from tuning.device import cpu_has_native_bf16, pick_device
from tuning.estimate import Worker

BATCH, WIDTH, HIDDEN, INTERMEDIATE = 16, 32, 384, 1536  # all-MiniLM-L6-v2's layer, a short-text batch


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
        optimizer_parameters_per_second=optimizer_rate(device),
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


def _layer_step_seconds(
    device: torch.device, hidden: int, dtype: torch.dtype, *, batch: int = 16, width: int = 32
) -> float:
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    config = BertConfig(
        hidden_size=hidden, num_attention_heads=max(hidden // 64, 2), intermediate_size=4 * hidden
    )
    config._attn_implementation = "sdpa"  # what a loaded model runs
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
