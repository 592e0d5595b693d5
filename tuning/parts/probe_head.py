"""A head that starts where a linear probe ends: LP-FT (Kumar et al. 2022, arXiv:2202.10054).

A new head starts at random; for its first few hundred steps the body is trained through a head that
has not learned yet, so what reaches the body is noise (Kumar et al.: it distorts the pretrained
features, and the job ends below a frozen probe). Here the head's final linear layer is fitted first,
to convergence, on the features the model computes for the training set as it stands before training
(the method applied: prompt tokens, prefixes and adapters included; dropout off), and fine-tuning
starts from there.

The fit is the task's own loss (cross-entropy, BCE or squared error: `Task.mean_loss`) over the
linear layer's inputs, with a light L2 on standardised features (PROBE_L2), by L-BFGS in float64:
one forward over the training set plus a fraction of a second. The standardisation is folded back
into the layer's weight and bias, so the model is unchanged but for them.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tuning.batching import Batch, Encoded
from tuning.evaluate import evaluation_batches
from tuning.parts.head_start import PROBE_BATCH

PROBE_L2 = 1e-3  # on standardised features: a light hold, as a logistic regression's default would
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
    weight, bias = _fit(features, targets, loss, layer.weight.detach().double().cpu(), _bias_of(layer))
    before = _loss(features, targets, loss, layer.weight.detach().double().cpu(), _bias_of(layer))
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    after = _loss(features, targets, loss, weight, bias)
    return ProbeFit(len(train_set), features.shape[1], before, after)


def layer_inputs(
    model: nn.Module, layer: nn.Linear, encoded: Encoded, *, device: torch.device, mixed_precision: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`layer`'s float64 inputs (one row per example) and the examples' labels, from one eval pass."""
    inputs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inputs.append(args[0].detach().double().cpu())

    def keep_labels(_logits: torch.Tensor, batch: Batch) -> None:
        target = batch["labels"].cpu()
        labels.append(target.double() if target.is_floating_point() else target)

    hook = layer.register_forward_pre_hook(keep_input)
    try:
        evaluation_batches(
            model,
            encoded,
            batch_size=PROBE_BATCH,
            device=device,
            visit=keep_labels,
            mixed_precision=mixed_precision,
        )
    finally:
        hook.remove()
    return torch.cat(inputs), torch.cat(labels)


def _bias_of(layer: nn.Linear) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach().double().cpu()


def _fit(
    features: torch.Tensor,
    targets: torch.Tensor,
    loss: Loss,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L-BFGS on standardised features from a zero start, then the standardisation folded back in:
    (x − μ)/σ · Wᵀ + b is x · (W/σ)ᵀ + (b − μ · (W/σ)ᵀ). A bias-free layer (GPT-2's score) has
    nowhere to put the shift, so its features are scaled but not centred."""
    scale = features.std(0).clamp(min=1e-6) if len(features) > 1 else torch.ones(features.shape[1])
    mean = features.mean(0) if bias is not None else torch.zeros(features.shape[1], dtype=features.dtype)
    standard = (features - mean) / scale
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
