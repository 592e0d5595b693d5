"""`"auto"` hyperparameters: the learning rate from the method's paper, the epochs from the data's size.

A spec's `learning_rate` and `epochs` default to "auto" (OpenAI's fine-tuning API uses the same word).
They are resolved once, where the training set's size is known (tuning.fit after encoding, and the
dry run's estimate from the validation report), into numbers the training loop, the manifest and the
checkpoints carry; the stored spec keeps "auto", and the job's events say what it chose and why.

- learning rate: the rate the method's paper fine-tunes with (each method registers it beside its
  paper, `MethodEntry.learning_rate`), given for batch 16, scaled by √(batch_size / 16), the
  square-root rule for Adam (Malladi et al. 2022, arXiv:2205.10287; Hoffer et al. 2017 for its
  reason: it keeps the update's noise scale). The task's new head (a fresh pooler or classifier)
  trains at least at 1e-3, Adam's default (Kingma & Ba 2014): at BERT's 2e-5..5e-5 a randomly
  initialised head is still near its start after a few hundred steps, and a head that has not
  learned yet makes the body chase noise (Kumar et al. 2022, arXiv:2202.10054); beside a faster
  body (prompts at 3e-2) it keeps the body's rate, so it never lags what feeds it. A head fitted
  first as a linear probe (head.initialization, tuning.parts.probe_head) has learned already: it
  trains at the body's rate, at most 1e-3 (`head_learning_rate`).
- epochs: enough passes for about TARGET_STEPS optimizer steps, clamped to MIN_EPOCHS..MAX_EPOCHS. A
  small set gets more passes, as OpenAI's auto does and as Mosbach et al. 2021 (arXiv:2006.04884)
  found small-data fine-tuning needs (more iterations, not a different rate); a large one gets one.

- head.pooling: "auto" reads the base model's folder (tuning.parts.pooling): the tokens' mean where
  it declares sentence-transformers mean pooling, else the model class's first token. Resolved here
  too when the folder is given, so the events, the dry run and the manifest say which; the model is
  built (tuning.build) by the same function from the same folder.

The rates are AdamW's, as the papers report them; with `optimizer: sgd` "auto" is refused.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning.events import Event
from tuning.methods import method_entry
from tuning.parts.head_start import starts_from_probe
from tuning.parts.pooling import resolve_pooling
from tuning.spec import JobSpec, ResolvedHyperparameters

TARGET_STEPS = 150  # 945 texts at batch 16: 3 epochs, OpenAI's auto for that size
MIN_EPOCHS, MAX_EPOCHS = 1, 10
REFERENCE_BATCH = 16  # the batch the registered rates are given for
HEAD_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class AutoChoice:
    """The spec with every "auto" resolved, the head's rate under auto, and why each was chosen."""

    spec: JobSpec  # hyperparameters: a ResolvedHyperparameters
    head_learning_rate: float | None  # None: the head trains at learning_rate, as the spec says
    reasons: dict[str, str]  # field → why, for the fields that were "auto"

    @property
    def hyperparameters(self) -> ResolvedHyperparameters:
        return trained_with(self.spec)

    def event(self) -> Event | None:
        """What the job's events say about it; None when nothing was "auto"."""
        if not self.reasons:
            return None
        hp = self.hyperparameters
        chosen: dict[str, Any] = {
            name: self.spec.head.pooling if name == "head.pooling" else getattr(hp, name)
            for name in self.reasons
        }
        if self.head_learning_rate is not None:
            chosen["head_learning_rate"] = self.head_learning_rate
        said = "; ".join(f"{name} {_shown(chosen[name])}: {why}" for name, why in self.reasons.items())
        return Event(
            "message",
            f"auto hyperparameters: {said}",
            {"resolved_hyperparameters": chosen, "auto_reasons": dict(self.reasons)},
        )


def resolve(
    spec: JobSpec, *, examples: int, steps_per_epoch: int, base_path: Path | None = None
) -> AutoChoice:
    """`spec` with its "auto" hyperparameters as numbers, for a training set of `examples` that makes
    `steps_per_epoch` optimizer steps a pass; with the base model's folder, its head.pooling too."""
    hp = spec.hyperparameters
    values = hp.model_dump()
    reasons: dict[str, str] = {}
    head_rate = None
    if hp.epochs == "auto":
        values["epochs"], reasons["epochs"] = auto_epochs(examples, steps_per_epoch)
    if hp.learning_rate == "auto":
        values["learning_rate"], reasons["learning_rate"] = auto_learning_rate(spec)
        if spec.task == "sequence_classification":
            head_rate = head_learning_rate(spec, values["learning_rate"])
    resolved = ResolvedHyperparameters.model_validate(values)
    update: dict[str, Any] = {"hyperparameters": resolved}
    if base_path is not None and spec.task == "sequence_classification" and spec.head.pooling == "auto":
        pooling, reasons["head.pooling"] = resolve_pooling("auto", base_path)
        update["head"] = spec.head.model_copy(update={"pooling": pooling})
    return AutoChoice(spec.model_copy(update=update), head_rate, reasons)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def auto_epochs(examples: int, steps_per_epoch: int) -> tuple[int, str]:
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / max(steps_per_epoch, 1))))
    return epochs, (
        f"{examples} training examples make {steps_per_epoch} steps a pass; {epochs} reach "
        f"{TARGET_STEPS} steps (between {MIN_EPOCHS} and {MAX_EPOCHS} passes)"
    )


def auto_learning_rate(spec: JobSpec) -> tuple[float, str]:
    paper = method_entry(spec.method.type).learning_rate(spec.method)
    batch = spec.hyperparameters.batch_size
    rate = min(1.0, paper.rate * math.sqrt(batch / REFERENCE_BATCH))
    scaled = "" if batch == REFERENCE_BATCH else f", ×√({batch}/{REFERENCE_BATCH}) for batch {batch}"
    return rate, f"{spec.method.type} at {paper.rate:g} ({paper.source}){scaled}"


def head_learning_rate(spec: JobSpec, rate: float) -> float:
    """The new head's rate beside a body at `rate`: a random head at least HEAD_LEARNING_RATE, so it
    catches up; a head fitted first as a probe (LP-FT) at most that and never above the body's: it
    starts at its optimum, and Adam moves every weight by about its rate each step, however small the
    gradient (a prompt's 3e-2 would walk it off in a few dozen steps)."""
    if starts_from_probe(spec):
        return min(HEAD_LEARNING_RATE, rate)
    return max(HEAD_LEARNING_RATE, rate)


def trained_with(spec: JobSpec) -> ResolvedHyperparameters:
    """The hyperparameters of a spec `resolve` returned: numbers where the job gave "auto"."""
    hp = spec.hyperparameters
    if not isinstance(hp, ResolvedHyperparameters):
        raise TypeError("hyperparameters still hold 'auto': resolve them first (tuning.auto.resolve)")
    return hp
