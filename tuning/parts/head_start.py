"""Where a job's new head starts (head.initialization), decided without torch: the API's dry run
estimates the probe's forward pass, the worker runs it (tuning.parts.probe_head)."""

from tuning.spec import JobSpec

PROBE_BATCH = 64  # examples per forward of the probe's pass over the training set (eval mode, no grad)


def starts_from_probe(spec: JobSpec) -> bool:
    """Whether the job's head is fitted as a linear probe before training, for `spec` as the job gave
    it (before tuning.auto resolves it): asked for ("probe"), or "auto" with a linear head where the
    learning rate is "auto" too, so deltatune picks the whole recipe (the head's rate with it,
    tuning.auto.head_learning_rate); a job that gives its own rate trains the head as it says, from
    the model class's random init. Never for a causal LM (its head is the pretrained output layer),
    nor a job that starts from a checkpoint (its head has trained already)."""
    if spec.task != "sequence_classification" or spec.from_checkpoint is not None:
        return False
    chosen = spec.head.initialization
    if chosen != "auto":
        return chosen == "probe"
    return spec.head.type == "linear" and spec.hyperparameters.learning_rate == "auto"
