"""Gradual unfreezing (ULMFiT, arXiv:1801.06146): stage s trains the s+1 topmost groups of the method's
trainable parameters, the head first, then one more layer group downward every `every` epochs or steps.

A group is a depth of `tuning.layers.LayerMap` (head and top, layer L−1, ..., embeddings) that holds
some of the method's parameters; depths holding none (LoRA puts nothing in the embeddings) are not
stages, so every stage unfreezes something. Frozen parameters get no gradient, so neither SGD nor
AdamW (whose decoupled weight decay only visits parameters with a gradient) changes them.
"""

import logging

from torch import nn

from tuning.events import Event
from tuning.layers import LayerMap
from tuning.spec.parts import GradualUnfreeze

logger = logging.getLogger(__name__)


class UnfreezeSchedule:
    """Called by the training loop before each optimizer step; returns an event when the stage begins."""

    def __init__(
        self, model: nn.Module, layers: LayerMap, options: GradualUnfreeze, steps_per_epoch: int
    ) -> None:
        self.layers = layers
        self.options = options
        self.steps_per_epoch = steps_per_epoch
        # The method's trainable set, recorded once: the schedule only ever narrows it, never widens it.
        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.depths = sorted({layers.depth(name) for name in self.trainable}, reverse=True)
        self.stage: int | None = None

    def __call__(self, step: int, epoch: int) -> Event | None:
        """`step` is 1-based, `epoch` 0-based."""
        elapsed = epoch if self.options.unit == "epochs" else step - 1
        stage = min(elapsed // self.options.every, len(self.depths) - 1)
        if stage == self.stage:
            return None
        self.stage = stage
        return self.enter(stage, step)

    def enter(self, stage: int, step: int) -> Event:
        """Let the parameters of the stage's groups train and freeze the rest of the method's set.

        The event names the step whose training the stage begins with, as every event of a step does (a
        resumed job's events go on from a step; the dead attempt's after it are dropped).
        """
        lowest = self.depths[stage]
        count = 0
        for name, parameter in self.trainable.items():
            parameter.requires_grad_(self.layers.depth(name) >= lowest)
            count += parameter.numel() if parameter.requires_grad else 0
        groups = [self.group_name(depth) for depth in self.depths[: stage + 1]]
        logger.debug("unfreeze stage %d: %s", stage, groups)
        return Event(
            "message",
            f"gradual unfreezing stage {stage}: training {', '.join(groups)} ({count:,} parameters)",
            {
                "step": step,
                "unfreeze_stage": stage,
                "trainable_groups": groups,
                "trainable_parameters": count,
            },
        )

    def group_name(self, depth: int) -> str:
        if depth == self.layers.count + 1:
            return "head"
        return "embeddings" if depth == 0 else f"layer {depth - 1}"
