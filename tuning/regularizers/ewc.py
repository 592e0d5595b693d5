"""EWC (Kirkpatrick et al. 2017, arXiv:1612.00796): L = task + λ·Σᵢ Fᵢ(θᵢ−θ₀ᵢ)², F the diagonal Fisher.

F is estimated once per job, before the method runs, on source-task texts: Fᵢ = E_x E_{y~p(y|x)}
[(∂ log p(y|x)/∂θᵢ)²], one example at a time. The label is drawn from the model's own prediction (the
true Fisher) rather than read from the file: the source file's labels need not be the new head's
classes, and the empirical Fisher with given labels is a different, biased quantity (Kunstner et al.
2019). Dropout is off, so F describes the deterministic function the penalty protects.
"""

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch
from tuning.errors import DataError
from tuning.events import Event
from tuning.methods.apply import Deviations
from tuning.regularizers import Regularizer, RegularizerContext
from tuning.spec.parts import EWCRegularizer
from tuning.task_model import TaskModel

logger = logging.getLogger(__name__)

Fisher = dict[str, torch.Tensor]


@dataclass
class FisherWeighted:
    """Σ F·(θ−θ₀)² over the deviations of weights that have a Fisher estimate."""

    weight: float
    fisher: Fisher
    deviations: Deviations
    name: str = "ewc"

    def penalty(self, model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=logits.device)
        for name, deviation in self.deviations():
            if name in self.fisher:
                total = total + (self.fisher[name] * deviation.float().pow(2)).sum()
        return total


def make(options: EWCRegularizer, context: RegularizerContext) -> list[Regularizer]:
    if context.fisher is None:
        raise ValueError("ewc needs the Fisher information that fit.py estimates before the method runs")
    if not any(name in context.fisher for name, _ in context.deviations()):
        logger.warning("ewc: no weight the method changes has a Fisher estimate; the penalty stays 0")
    return [FisherWeighted(options.weight, context.fisher, context.deviations)]


def estimate_fisher(
    classifier: TaskModel,
    texts: Sequence[str],
    *,
    device: torch.device,
    sample: bool = True,
    seed: int = 0,
) -> tuple[Fisher, Event]:
    """The diagonal Fisher of every pretrained parameter, by name, and an event stating its cost.

    `sample=False` takes the exact expectation over labels, Σ_y p(y|x)·g_y², at one backward pass
    per class; sampling needs one per example. The sampling generator is private so that estimating
    F leaves the global random stream (and so the method's initialisation) as the seed made it.
    """
    if not texts:
        raise DataError("ewc's source file has no examples", param="regularizers.ewc.fisher_file")
    model = classifier.model
    named = [(name, p) for name, p in model.named_parameters() if name in classifier.pretrained]
    parameters = [parameter for _, parameter in named]
    flags = [parameter.requires_grad for parameter in parameters]
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    sums = [torch.zeros_like(parameter) for parameter in parameters]
    started = time.perf_counter()
    try:
        model.eval()
        for parameter in parameters:
            parameter.requires_grad_(True)
        for text in texts:
            log_probs = F.log_softmax(_logits(classifier, text, device)[0], dim=-1)
            for weight, gradients in _label_gradients(log_probs, parameters, sample, generator):
                for total, gradient in zip(sums, gradients, strict=True):
                    if gradient is not None:
                        total.add_(gradient.pow(2), alpha=weight)
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)
    seconds = time.perf_counter() - started
    fisher = {name: total / len(texts) for (name, _), total in zip(named, sums, strict=True)}
    return fisher, _cost_event(fisher, len(texts), seconds)


def _logits(classifier: TaskModel, text: str, device: torch.device) -> torch.Tensor:
    """One example's float32 logits, fed exactly as training feeds it: ids and mask only (a tokenizer's
    token_type_ids would shift a GPT-2, which embeds them with its token table)."""
    encoded = classifier.tokenizer(
        text, truncation=True, max_length=classifier.max_length, return_tensors="pt"
    )
    inputs = {key: encoded[key].to(device) for key in ("input_ids", "attention_mask")}
    logits: torch.Tensor = classifier.model(**inputs).logits
    return logits.float()


def _label_gradients(
    log_probs: torch.Tensor, parameters: list[nn.Parameter], sample: bool, generator: torch.Generator
) -> Iterator[tuple[float, Sequence[torch.Tensor | None]]]:
    """(probability weight, ∂ log p(y|x)/∂θ) for a sampled label, or for every label with its p(y|x).

    One label's gradients at a time: a many-class head must not hold a model-sized copy per class.
    """
    probabilities = log_probs.detach().exp()
    if sample:
        label = int(torch.multinomial(probabilities.cpu(), 1, generator=generator))
        yield 1.0, torch.autograd.grad(log_probs[label], parameters, allow_unused=True)
        return
    classes = len(log_probs)
    for label in range(classes):
        keep_graph = label < classes - 1
        gradients = torch.autograd.grad(
            log_probs[label], parameters, allow_unused=True, retain_graph=keep_graph
        )
        yield float(probabilities[label]), gradients


def _cost_event(fisher: Fisher, examples: int, seconds: float) -> Event:
    values = sum(tensor.numel() for tensor in fisher.values())
    return Event(
        "message",
        f"ewc: Fisher information of {values:,} pretrained values estimated on {examples} source examples "
        f"in {seconds:.1f} s",
        {
            "fisher_examples": examples,
            "fisher_seconds": seconds,
            "fisher_parameters": values,
            "fisher_tensors": len(fisher),
        },
    )
