"""What a job asks of the machine it trains on: how many processes (one device each) train it."""

from pydantic import Field

from tuning.spec_base import SpecModel


class Resources(SpecModel):
    """The processes a job trains in; the queue's workers say how many they offer a job."""

    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes that train the job together, one device each (a GPU on CUDA, a share of "
        "the CPU otherwise), under torch.distributed: DDP, or FSDP for method 'full' on CUDA. Each global "
        "batch of hyperparameters.batch_size is split among them, so the schedule, the seed and the "
        "result do not depend on this number. At most what the queue's workers offer a job.",
    )
