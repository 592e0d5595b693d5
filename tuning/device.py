"""Where training runs: a CUDA GPU with bf16 autocast when there is one, the CPU in float32 otherwise."""

import contextlib
from collections.abc import Iterator

import torch


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA: weights stay float32 (so the saved delta is float32), matmuls run in bf16."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        # CPU bf16 autocast is slower than float32 on most CPUs and changes results; not worth it.
        yield
