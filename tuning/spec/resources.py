"""What a job asks of the machine it trains on: how many processes (one device each) train it, and how
many examples go through one device at once."""

from pydantic import Field

from tuning.spec_base import SpecModel


class Resources(SpecModel):
    """The processes a job trains in; the queue's workers say how many they offer a job."""

    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that train the job together, one device each (a GPU on CUDA, a share of "
        "the CPU otherwise), under torch.distributed: DDP (each device holds the whole model), or for "
        "method full FSDP (each device holds 1/N of the weights, gradients and optimizer state; not with "
        "regularizers.l2sp or regularizers.ewc). Each global batch of "
        "hyperparameters.batch_size is split among them, so the schedule, the seed and the result do not "
        "depend on this number. At most what the queue's workers offer a job.",
    )
    max_examples_per_device: int | None = Field(
        None,
        ge=1,
        description="At most this many examples go through one device's forward and backward at once: a "
        "larger share of a batch is trained in several passes whose gradients add up before the step "
        "(gradient accumulation), with the same result. null: a device's whole share in one pass.",
    )
