"""KL toward the pretrained outputs (Hinton et al. 2015; Li & Hoiem 2016): L = task + λ·T²·KL(p₀ ‖ p_θ).

p = softmax(logits / T) on the same batch, p₀ from a frozen copy of the model taken before the method
ran (its head is the job's freshly initialised one), in eval mode. T² keeps the gradient's size
independent of the temperature, as in distillation. The value is the mean over the batch's examples.
A method that adds tokens (input_adapter) gives the reference their rows as they were initialised.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuning.batching import Batch
from tuning.evaluate import classifier_logits
from tuning.regularizers import Regularizer, RegularizerContext
from tuning.spec.parts import KLRegularizer


@dataclass
class TowardPretrainedOutputs:
    weight: float
    temperature: float
    reference: nn.Module
    name: str = "kl"

    def penalty(self, model: nn.Module, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # The first call comes before the first optimizer step: the new rows are still their init.
            _match_vocabulary(self.reference, model)
            # classifier_logits drops the labels and moves the batch to the logits' device.
            reference_logits = classifier_logits(self.reference, batch, logits.device)
        return tempered_kl(reference_logits, logits, self.temperature)


def make(options: KLRegularizer, context: RegularizerContext) -> list[Regularizer]:
    if context.reference_model is None:
        raise ValueError("kl needs the reference model that fit.py copies before the method runs")
    reference = context.reference_model.eval().requires_grad_(False)
    return [TowardPretrainedOutputs(options.weight, options.temperature, reference)]


def tempered_kl(reference_logits: torch.Tensor, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(reference/T) ‖ softmax(logits/T)), averaged over the rows."""
    log_p = F.log_softmax(reference_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(logits.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _match_vocabulary(reference: nn.Module, model: nn.Module) -> None:
    """Give the reference an embedding row for every id the model accepts beyond the reference's table.

    The reference was copied before the method ran, so ids of tokens the method added would be out
    of its range; it reads them as the model embedded them, i.e. as they were initialised.
    """
    table = reference.get_input_embeddings()  # type: ignore[operator]
    vocabulary = int(getattr(getattr(model, "config", None), "vocab_size", 0))
    if not isinstance(table, nn.Embedding) or vocabulary <= table.num_embeddings:
        return
    old = table.num_embeddings
    new_ids = torch.arange(old, vocabulary, device=table.weight.device)
    rows = model.get_input_embeddings()(new_ids)  # type: ignore[operator]
    reference.resize_token_embeddings(vocabulary, mean_resizing=False)  # type: ignore[operator]
    reference.get_input_embeddings().weight[old:] = rows  # type: ignore[operator]
