"""Evaluations between training steps with each LoRA update folded into a copy of its weight.

An adapted projection computes W·x + s·B·A·x: the base's matmul, two thin ones, a scale and an add,
for each of the 24 projections of a MiniLM with LoRA on query/key/value/dense. With dropout off (an
evaluation), that is W'·x for W' = W + s·B·A, one matmul. A job's evaluations before its last step
(step 0, each epoch's end, every `eval_steps`) serve its progress events and early stopping, so they
run folded: the whole docstrings test set under a MiniLM LoRA (r=8, query/key/value/dense, one
thread) took 0.72-0.90× the CPU time unfolded. The last step's evaluation, the one a job reports, runs
unfolded as PEFT runs the artifact, so the reported metrics are the artifact's to the last bit; the
folded ones differ from them by float rounding (W' is rounded once), far less than bf16 moves them.

W' is a separate tensor kept only while the evaluation runs: writing B·A into W and taking it out
again (LoraLinear.merge/unmerge) would leave W off by rounding, and training would go on from another
base. It holds one copy of each adapted weight for that time (tuning.estimate counts it where it
outgrows the training's activations, which are freed by then). On a CPU only: measured there, and a
GPU's memory is dearer while its small kernels cost it less.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from tuning.distribution import is_sharded


@runtime_checkable
class FoldsForEvaluation(Protocol):
    """A layer that can compute its eval-mode forward from one folded weight (LoraLinear)."""

    def fold_for_evaluation(self) -> None: ...

    def unfold_after_evaluation(self) -> None: ...


def folding_layers(model: nn.Module) -> list[FoldsForEvaluation]:
    return [module for module in model.modules() if isinstance(module, FoldsForEvaluation)]


def evaluations_fold(model: nn.Module, device: torch.device) -> bool:
    """Whether a job's evaluations before its last step run folded: on a CPU, for a model not sharded
    across processes (each holds a part of every weight), that has layers to fold."""
    return device.type == "cpu" and not is_sharded(model) and bool(folding_layers(model))


@contextmanager
def folded(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within it, `model`'s folding layers run eval-mode forwards from their folded weights."""
    layers = folding_layers(model) if enabled else []
    try:
        with torch.no_grad():
            for layer in layers:
                layer.fold_for_evaluation()
        yield
    finally:
        for layer in layers:
            layer.unfold_after_evaluation()
