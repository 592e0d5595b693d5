"""LoRA's down projection with a sparsely drawn dropout mask: dropout's law, and dropout's products."""

import math

import pytest
import torch
from torch import nn

from tuning.methods.lora.dropped_down import dropped_down, dropped_positions, uses_dropped_down
from tuning.methods.lora.model import LoraLinear

CPU = torch.device("cpu")
BF16_EPS = torch.finfo(torch.bfloat16).eps


def binomial_sd(count: int, p: float) -> float:
    return math.sqrt(count * p * (1 - p))


@pytest.mark.parametrize("p", [0.01, 0.05, 0.25])
def test_each_position_is_dropped_independently_with_probability_p(p: float) -> None:
    torch.manual_seed(0)
    count, draws = 1000, 400
    hits = torch.zeros(count)
    pairs = 0  # a position and the next both dropped
    for _ in range(draws):
        positions = dropped_positions(count, p, CPU)
        assert torch.all(positions[1:] > positions[:-1]) and positions.min() >= 0 and positions.max() < count
        mask = torch.zeros(count, dtype=torch.bool)
        mask[positions] = True
        hits += mask
        pairs += int((mask[1:] & mask[:-1]).sum())
    total = count * draws
    # 5 binomial standard deviations: each check fails by chance with probability below 1e-6.
    assert abs(hits.sum().item() - total * p) < 5 * binomial_sd(total, p)
    # The same rate at the edges as in the middle (the gaps' sum starts at 0 and ends at count).
    for edge in (hits[:100], hits[-100:]):
        assert abs(edge.sum().item() - 100 * draws * p) < 5 * binomial_sd(100 * draws, p)
    # Independence: a neighbour is dropped with probability p², not more or less.
    neighbours = (count - 1) * draws
    assert abs(pairs - neighbours * p * p) < 5 * binomial_sd(neighbours, p * p)


def test_positions_come_from_the_seeded_generator() -> None:
    torch.manual_seed(7)
    first = dropped_positions(10_000, 0.1, CPU)
    torch.manual_seed(7)
    assert torch.equal(dropped_positions(10_000, 0.1, CPU), first)
    assert not torch.equal(dropped_positions(10_000, 0.1, CPU), first)


def reference(x: torch.Tensor, weight: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """F.linear of x masked at the positions dropped_down draws after the same seed, scaled by 1/(1-p)."""
    torch.manual_seed(seed)
    mask = torch.ones(x.numel(), dtype=x.dtype)
    mask[dropped_positions(x.numel(), p, CPU)] = 0
    return nn.functional.linear(x * mask.view_as(x) / (1 - p), weight)


def leaves(seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 24, generator=generator, dtype=dtype, requires_grad=True)
    weight = torch.randn(4, 24, generator=generator, dtype=dtype, requires_grad=True)
    return x, weight


def test_values_and_gradients_are_dropouts_exactly_in_float64() -> None:
    p, seed = 0.2, 3
    x, weight = leaves(1)
    ours = dropped_down_seeded(x, weight, p, seed)
    expected = reference(x, weight, p, seed)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    up = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, (x, weight), up)
    expected_grads = torch.autograd.grad(expected, (x, weight), up)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # And gradcheck's finite differences agree (the same positions on every call: reseeded).
    small = (x[:1, :2, :8].detach().requires_grad_(), weight[:, :8].detach().requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: dropped_down_seeded(a, b, p, seed), small)
    assert (grads[0] == 0).any()  # some inputs were dropped: their gradient is zero


def dropped_down_seeded(x: torch.Tensor, weight: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return dropped_down(x, weight, p)


def test_under_autocast_products_are_bf16_like_autocasts_own() -> None:
    p, seed = 0.1, 5
    x, weight = leaves(2, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = dropped_down_seeded(x, weight, p, seed)
        theirs = reference(x, weight, p, seed)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    # Each multiplies the same bf16-rounded operands; outputs ~1-5 in size, 24 products summed.
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=4 * BF16_EPS, atol=4 * BF16_EPS * 5)
    up = torch.randn_like(ours, dtype=torch.float32).to(torch.bfloat16)
    for got, want in zip(
        torch.autograd.grad(ours, (x, weight), up), torch.autograd.grad(theirs, (x, weight), up), strict=True
    ):
        assert got.dtype == want.dtype == torch.float32  # gradients in the leaves' own dtype
        torch.testing.assert_close(got, want, rtol=8 * BF16_EPS, atol=8 * BF16_EPS * want.abs().max().item())


def test_lora_uses_it_in_training_on_the_cpu_and_plain_layers_in_eval() -> None:
    torch.manual_seed(0)
    layer = LoraLinear(16, 8, r=4, alpha=8, dropout=0.1)
    nn.init.normal_(layer.lora_B.weight)  # a nonzero update, so dropout shows in the output
    x = torch.randn(64, 16)
    assert uses_dropped_down(0.1, x) and not uses_dropped_down(0.5, x) and not uses_dropped_down(0.0, x)
    layer.eval()
    plain = layer(x)
    layer.train()
    torch.manual_seed(1)
    trained = layer(x)
    torch.manual_seed(1)
    update = layer.lora_B(dropped_down(x, layer.lora_A.weight, 0.1)) * layer.scaling
    torch.testing.assert_close(trained, layer.base_layer(x) + update)
    assert not torch.allclose(trained, plain)
    # In expectation dropout changes nothing: the mean over draws approaches the eval output.
    mean = layer(x.repeat(2000, 1)).view(2000, *plain.shape).mean(0)
    torch.testing.assert_close(mean, plain, rtol=0.05, atol=0.05 * plain.abs().max().item())
