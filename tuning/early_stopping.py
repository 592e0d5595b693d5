"""Early stopping: follow one validation metric, keep the best evaluation's weights, say when to stop."""

from typing import Any

import torch
from torch.distributed.tensor import DTensor

from tuning.evaluate import Evaluation
from tuning.events import Event
from tuning.spec import LOWER_IS_BETTER, EarlyStopping


class BestTracker:
    """Watches evaluations of `options.metric`; keeps a CPU copy of `parameters` at the best one.

    Only the trained parameters are copied (all a method can change), on the CPU so that a full
    fine-tune does not double its accelerator memory; a sharded one's (tuning.distribution) keeps each
    process's shard where it is, 1/N of the weights, since gathering them whole for a resume point runs
    there. Every process evaluates the same model on the same data, so all of them decide alike.
    """

    def __init__(self, options: EarlyStopping, parameters: list[torch.Tensor]) -> None:
        self.metric = options.metric
        self.patience = options.patience
        self.min_delta = options.min_delta
        self.lower_is_better = options.metric in LOWER_IS_BETTER
        self.parameters = parameters
        self.best_eval: Evaluation | None = None
        self.best_step: int | None = None
        self.saved: list[torch.Tensor] = []
        self.since_best = 0

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def observe(self, step: int, evaluation: Evaluation) -> Event | None:
        """Record one evaluation; returns the event announcing a stop, when this one triggers it."""
        value = evaluation.metrics[self.metric]
        if self.best_eval is None or self._improves(value, self.best_eval.metrics[self.metric]):
            self.best_eval, self.best_step, self.since_best = evaluation, step, 0
            self.saved = [_kept(parameter) for parameter in self.parameters]
            return None
        self.since_best += 1
        if not self.should_stop:
            return None
        return Event(
            "message",
            f"early stopping at step {step}: {self.metric} has not improved on step {self.best_step}'s "
            f"{self.best_eval.metrics[self.metric]:.4g} for {self.patience} evaluations",
            {"step": step, "best_step": self.best_step, "metric": self.metric},
        )

    def state(self) -> dict[str, Any]:
        """What a resume point keeps beside `saved`: the best evaluation, its step, the patience used."""
        best = self.best_eval.as_json() if self.best_eval is not None else None
        return {"best_eval": best, "best_step": self.best_step, "since_best": self.since_best}

    def restore_state(self, state: dict[str, Any], saved: list[torch.Tensor]) -> None:
        best = state["best_eval"]
        self.best_eval = Evaluation.from_json(best) if best is not None else None
        self.best_step, self.since_best, self.saved = state["best_step"], state["since_best"], saved

    def restore(self) -> int:
        """Put the best evaluation's weights back into the model; returns that evaluation's step."""
        assert self.best_step is not None
        with torch.no_grad():
            for parameter, saved in zip(self.parameters, self.saved, strict=True):
                parameter.copy_(saved)
        return self.best_step

    def _improves(self, value: float, best: float) -> bool:
        return value < best - self.min_delta if self.lower_is_better else value > best + self.min_delta


def _kept(parameter: torch.Tensor) -> torch.Tensor:
    if isinstance(parameter, DTensor):
        return parameter.detach().clone()
    return parameter.detach().to("cpu", copy=True)
