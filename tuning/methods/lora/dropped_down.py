"""LoRA's down projection of its dropped-out input, A·dropout(x), with dropout's mask drawn sparsely.

dropout(x) = m⊙x/(1−p), each element kept (mᵢ = 1) with probability 1−p. At LoRA's usual p (0.05 to
0.1) almost every element is kept, so instead of a random number per element (torch's CPU dropout
draws one, then writes a float32 mask and the masked input) this draws only the dropped positions:
the gaps between them are independent Geometric(p) draws, which is exactly the law of independent
Bernoulli(p) drops, so training is the same in law as with torch's dropout (not draw for draw).
The 0/1 mask is built in the product's dtype (autocast's bf16 where it is on, exact for 0 and 1),
and the 1/(1−p) scale goes on the r-wide product rather than on x; backward zeroes ∂x at the dropped
positions. What it keeps for backward is what autocast keeps for `lora_A(dropout(x))` less the
float32 mask: the masked input in the product's dtype, and the positions.

Why: a LoRA step on all-MiniLM-L6-v2 (r=8 on query, key, value and the dense layers, batch 16 of
64 tokens, bf16 autocast, one thread) took 680-730 ms of CPU with torch's dropout, 506-513 ms with
this and 463-478 ms with no dropout at all. On CUDA, dropout is one fused kernel and drawing
positions would wait on the GPU: it stays there.
"""

import math

import torch

from tuning.methods.lora.options import SPARSE_DROPOUT_UP_TO


def uses_dropped_down(p: float, x: torch.Tensor) -> bool:
    """Whether `dropped_down` pays for this dropout probability and input."""
    return 0.0 < p <= SPARSE_DROPOUT_UP_TO and x.device.type == "cpu"


def dropped_positions(count: int, p: float, device: torch.device) -> torch.Tensor:
    """Sorted flat positions in [0, count), each in it independently with probability `p` (0 < p < 1).

    Draws from torch's default generator of `device`, so a seeded job (and a resumed one, which
    restores that generator) draws the same positions.
    """
    found: list[torch.Tensor] = []
    next_free = 0  # positions below it are decided
    log_kept = math.log1p(-p)
    while next_free < count:
        expected = (count - next_free) * p
        draws = int(expected + 6 * math.sqrt(expected) + 16)  # rarely short: then another round
        uniform = 1.0 - torch.rand(draws, dtype=torch.float64, device=device)  # (0, 1]
        gaps = torch.floor(torch.log(uniform) / log_kept).long() + 1  # Geometric(p) on 1, 2, ...
        positions = torch.cumsum(gaps, 0) + (next_free - 1)
        found.append(positions[: int(torch.searchsorted(positions, count))])  # they ascend
        next_free = int(positions[-1]) + 1
    return torch.cat(found)


def dropped_down(x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
    """`F.linear(F.dropout(x, p), weight)` in training, the products in autocast's dtype when it is on."""
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    with torch.autocast(x.device.type, enabled=False):
        out: torch.Tensor = _DroppedDown.apply(x, weight, p, dtype)
    return out


class _DroppedDown(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        p: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        dropped = dropped_positions(x.numel(), p, x.device)
        kept = torch.ones(x.numel(), dtype=dtype, device=x.device).index_fill_(0, dropped, 0)
        masked = x.to(dtype) * kept.view_as(x)  # 0/1 is exact in any dtype: the scale comes after
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(masked, weight, dropped)
        ctx.scale, ctx.input_dtype = scale, x.dtype  # type: ignore[attr-defined]
        return (masked @ weight.to(dtype).t()).mul_(scale)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        masked, weight, dropped = ctx.saved_tensors  # type: ignore[attr-defined]
        scale: float = ctx.scale  # type: ignore[attr-defined]
        grad = grad.to(masked.dtype)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            grad_x = (grad @ weight.to(masked.dtype)).to(ctx.input_dtype)  # type: ignore[attr-defined]
            grad_x.view(-1).index_fill_(0, dropped, 0)
            grad_x.mul_(scale)
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            flat_grad = grad.reshape(-1, grad.shape[-1])
            grad_weight = (flat_grad.t() @ masked.reshape(-1, masked.shape[-1])).to(weight.dtype).mul_(scale)
        return grad_x, grad_weight, None, None
