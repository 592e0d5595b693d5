"""Where training runs, and in what precision its matmuls run.

A CUDA GPU when there is one, else the CPU. Training's forward runs under bf16 autocast where that is
fast: on CUDA, and on CPUs with native bf16 matrix instructions (AMX `amx_bf16`, or `avx512_bf16`),
where a bf16 matmul runs 3-4× float32's FLOP/s; on other CPUs bf16 is emulated and slower than
float32. Weights, gradients and optimizer state stay float32 under autocast (so the saved delta is
float32), and the job's evaluations run as its training does (tuning.evaluate).
`hyperparameters.mixed_precision` overrides the choice: "bf16" forces autocast, "no" trains and
evaluates in float32 everywhere.
"""

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

# CPU feature flags (Linux /proc/cpuinfo names) of native bf16 matrix arithmetic.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16); False where it cannot tell."""
    try:
        return lists_native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def lists_native_bf16(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text's `flags` lines name AMX-BF16 or AVX512-BF16."""
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return not BF16_CPU_FLAGS.isdisjoint(flags)


def uses_bf16(device: torch.device, mixed_precision: str) -> bool:
    """Whether training on `device` runs under bf16 autocast, for the spec's `mixed_precision`."""
    if mixed_precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return mixed_precision == "bf16"


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on `device` when `enabled`: weights stay float32, matmuls run in bf16."""
    if enabled:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def attention_for(device: torch.device) -> str:
    """The attention kernel a job trains with on `device` (transformers' `attn_implementation`).

    On a CPU the plain one ("eager"): torch's CPU flash attention (what "sdpa" picks there) has a
    slow backward, and a LoRA step on all-MiniLM-L6-v2 (batch 16 of 32 to 96 tokens, bf16 autocast,
    one thread) took 1-17 % less CPU with eager, the longer the batch the more; forward alone they
    were equal. Elsewhere SDPA, whose fused kernels are the fast ones on a GPU.
    """
    return "eager" if device.type == "cpu" else "sdpa"


def use_attention(model: nn.Module, device: torch.device) -> None:
    """Switch `model` to `attention_for(device)` where transformers offers it for the model's family."""
    wanted = attention_for(device)
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", wanted) == wanted:
        return
    # A family without that kernel keeps the one it loaded with.
    with contextlib.suppress(ValueError, ImportError, AttributeError):
        model.set_attn_implementation(wanted)  # type: ignore[operator]
