"""Where a job's new head starts (head.initialization), decided without torch: the API's dry run
estimates the probe's forward pass, the worker runs it (tuning.parts.probe_head)."""

from tuning.spec import JobSpec

PROBE_BATCH = 64  # examples per forward of the probe's pass over the training set (eval mode, no grad)


def starts_from_probe(spec: JobSpec) -> bool:
    """Whether the job's head is fitted as a linear probe before training: asked for, on a classifier
    (a causal LM's head is its pretrained output layer) that does not start from a checkpoint (its
    head has trained already)."""
    return (
        spec.head.initialization == "probe"
        and spec.task == "sequence_classification"
        and spec.from_checkpoint is None
    )
