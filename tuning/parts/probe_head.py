"""A head that starts where a linear probe ends: LP-FT (Kumar et al. 2022, arXiv:2202.10054).

A new head starts at random; for its first few hundred steps the body is trained through a head that
has not learned yet, so what reaches the body is noise (Kumar et al.: it distorts the pretrained
features, and the job ends below a frozen probe). Here the head's final linear layer is fitted first,
to convergence, on the features the model computes for the training set as it stands before training
(the method applied: prompt tokens, prefixes and adapters included; dropout off), and fine-tuning
starts from there. A job asks for it (head.initialization "probe"); on the tools docstring task it
started every job at the probe's accuracy but did not end measurably above a random head's job
(README, goal 8), so it is not the default.

The fit is the task's own loss (cross-entropy, BCE or squared error: `Task.mean_loss`) over the
linear layer's inputs, with a light L2 (PROBE_L2) on centred features in units of their RMS, by
L-BFGS in float64: one forward over the training set plus a fraction of a second. The centring and
the scale are folded back into the layer's weight and bias, so the model is unchanged but for them.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tuning.batching import Batch, Encoded
from tuning.evaluate import evaluation_batches
from tuning.parts.head_start import PROBE_BATCH

PROBE_L2 = 1e-3  # per squared weight on RMS-scaled features: a light hold, as in a logistic regression
PROBE_ITERATIONS = 500  # L-BFGS iterations; a few hundred examples converge in tens


@dataclass(frozen=True)
class ProbeFit:
    """What fitting the head did: for the job's event."""

    examples: int
    features: int
    loss_before: float  # the task's loss on the training set with the random head
    loss_after: float  # ... with the probe's


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit_probe_head(
    model: nn.Module,
    layer: nn.Linear,
    train_set: Encoded,
    *,
    loss: Loss,
    device: torch.device,
    mixed_precision: bool = False,
) -> ProbeFit:
    """Set `layer` (the head's last linear layer, inside `model`) to the L2-regularised fit of `loss`
    on its inputs over `train_set`, computed by `model` in eval mode."""
    features, targets = layer_inputs(model, layer, train_set, device=device, mixed_precision=mixed_precision)
    random_weight, random_bias = layer.weight.detach().double().cpu(), _bias_of(layer)
    before = _loss(features, targets, loss, random_weight, random_bias)
    weight, bias = _fit(features, targets, loss, random_weight, random_bias)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is not None and bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    after = _loss(features, targets, loss, weight, bias)
    return ProbeFit(len(train_set), features.shape[1], before, after)


def layer_inputs(
    model: nn.Module, layer: nn.Linear, encoded: Encoded, *, device: torch.device, mixed_precision: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`layer`'s float64 inputs (one row per example) and the examples' labels, from one eval pass."""
    inputs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []  # the batch's input to `layer`, until its logits come

    def keep_input(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach())

    def keep_row(logits: torch.Tensor, batch: Batch) -> None:
        inputs.append(_example_rows(layer, seen.pop(), logits).double().cpu())
        target = batch["labels"].cpu()
        labels.append(target.double() if target.is_floating_point() else target)

    hook = layer.register_forward_pre_hook(keep_input)
    try:
        evaluation_batches(
            model,
            encoded,
            batch_size=PROBE_BATCH,
            device=device,
            visit=keep_row,
            mixed_precision=mixed_precision,
        )
    finally:
        hook.remove()
    return torch.cat(inputs), torch.cat(labels)


def _example_rows(layer: nn.Linear, given: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """One input row per example. A pooled head gets one already (B × H); a last-token head (GPT-2's
    score) scores every position (B × T × H) and the model keeps one per example, by its own rule
    (the last token that is not padding): the position whose output is the logits it returned."""
    if given.dim() == 2:
        return given
    with torch.no_grad():
        outputs = layer(given.to(layer.weight.dtype)).float()  # B × T × labels
    position = (outputs - logits.to(outputs.device)[:, None, :]).abs().sum(-1).argmin(-1)
    return given[torch.arange(len(given), device=given.device), position]


def _bias_of(layer: nn.Linear) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach().double().cpu()


def _fit(
    features: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L-BFGS from a zero start on centred features in units of their RMS, then both folded back in:
    (x − μ)/σ · Wᵀ + b is x · (W/σ)ᵀ + (b − μ · (W/σ)ᵀ). One σ for all features, not one each: a
    feature that barely varies over the training set would get a weight of 1/its spread, logits in
    the thousands, and a head fine-tuning cannot move. A bias-free layer (GPT-2's score) has nowhere
    to put the shift, so its features are not centred."""
    mean = features.mean(0) if bias is not None else torch.zeros(features.shape[1], dtype=features.dtype)
    centred = features - mean
    scale = centred.square().mean().sqrt().clamp(min=1e-12)
    standard = centred / scale
    w = torch.zeros_like(weight, requires_grad=True)
    b = torch.zeros(weight.shape[0], dtype=torch.float64, requires_grad=bias is not None)
    trained = [w, b] if bias is not None else [w]
    optimizer = torch.optim.LBFGS(trained, max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(standard @ w.T + b, targets) + PROBE_L2 * w.square().sum()
        value.backward()
        return value

    optimizer.step(objective)
    with torch.no_grad():
        folded = w / scale
        shift = b - folded @ mean
    return folded, shift if bias is not None else None


def _loss(
    features: torch.Tensor, targets: torch.Tensor, loss: Loss, weight: torch.Tensor, bias: torch.Tensor | None
) -> float:
    logits = features @ weight.T + (bias if bias is not None else 0.0)
    return float(loss(logits, targets))
