"""Data parallelism: the processes that train one job together, as the training loop sees them.

torchrun starts the processes (tuning.distributed is their entry); each holds the whole model, and
`Ranks` is the loop's one seam to the others. The loop forms each global batch exactly as one process
would (same seed, same order, same padding), and each process trains on its rows of it (`shares`,
in passes of at most `resources.max_examples_per_device` rows whose gradients add up): each pass's
loss is scaled by its share of the batch's loss units (examples, or target tokens for causal_lm) times
the number of processes, so that DDP's average of the gradients is the one-process gradient. Clipping
then sees the all-reduced gradient, the optimizer steps alike everywhere, and the schedule, seed and
result do not depend on the number of processes (to float rounding: a sum split in two adds in another
order). Rank 0 alone reports, checkpoints and writes resume points; `agree` makes every process stop
at the step rank 0 stops at. With one process (`SINGLE`) and one pass every method is the identity.

DDP wraps the model of every method but `full`, over gloo on the CPU and nccl on CUDA. `full` trains
sharded (FSDP2's fully_shard, each transformer layer then the root): each process holds 1/N of the
weights, gradients and optimizer moments, and a forward or backward gathers one layer at a time.
FSDP averages the gradients as DDP does, so the loss scales above hold for both. Whatever needs the
whole weights (a resume point, a checkpoint, the artifact) gathers them, every process taking part
(`whole`), and a resume point's whole tensors are cut to this process's shard again when it is read
(`sharded_like`).
"""

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import distributed, nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from tuning.batching import IGNORE_INDEX, Batch

# Every collective waits at most this long: a process that died or hangs fails the others' next step
# instead of holding them forever (torchrun then stops them all). Covers rank 0's longest lone work,
# writing a resume point and handing it over.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Share:
    """One pass over a process's rows of a global batch, and what its mean loss is scaled by."""

    batch: Batch
    loss_scale: float  # its share of the batch's loss units × the number of processes
    units_share: float  # its share of the batch's loss units (0 for a process with no rows)

    def weighted(self, loss: torch.Tensor | float) -> torch.Tensor | float:
        """Its mean loss as its part of the batch's mean (exactly the mean when it is the whole batch)."""
        return loss if self.units_share == 1.0 else loss * self.units_share


@dataclass(frozen=True)
class Ranks:
    """This process's place among the `world_size` that train the job (torch.distributed's rank)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # this process's device; None: tuning.device picks it

    @property
    def leads(self) -> bool:
        """Whether this process is rank 0: the one that reports, checkpoints and writes resume points."""
        return self.rank == 0

    def shard(self, model: nn.Module, layers: nn.Module) -> None:
        """Shard `model` in place (FSDP2) among the processes: each of the `layers`, then the rest.

        Before the optimizer is built: it must hold the shards, the parameters that train from now on.
        """
        if self.world_size == 1:
            return
        for layer in layers.children():
            fully_shard(layer)
        fully_shard(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training step calls it: under DDP, whose backward averages the gradients
        (a sharded model averages them itself)."""
        if self.world_size == 1 or is_sharded(model):
            return model
        on_cuda = self.device is not None and self.device.type == "cuda"
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if on_cuda else None)

    def shares(self, batch: Batch, *, causal_lm: bool, rows_per_pass: int | None = None) -> list[Share]:
        """This process's contiguous rows of `batch`, in passes of at most `rows_per_pass` rows whose
        gradients add up (gradient accumulation), each with its loss scale (module docstring)."""
        rows = len(batch["attention_mask"])
        if self.world_size == 1 and (rows_per_pass is None or rows <= rows_per_pass):
            return [Share(batch, 1.0, 1.0)]
        chunk = torch.tensor_split(torch.arange(rows), self.world_size)[self.rank]
        if len(chunk) == 0:
            # A batch smaller than the processes: this one still runs the step DDP waits for, on a
            # row whose loss counts zero.
            return [Share(_rows(batch, 0, 1), 0.0, 0.0)]
        total = max(_loss_units(batch, causal_lm), 1.0)
        start, stop = int(chunk[0]), int(chunk[-1]) + 1
        width = rows_per_pass or stop - start
        passes = []
        for first in range(start, stop, width):
            part = _rows(batch, first, min(first + width, stop))
            fraction = _loss_units(part, causal_lm) / total
            passes.append(Share(part, fraction * self.world_size, fraction))
        return passes

    def batch_loss(self, loss: torch.Tensor | float) -> torch.Tensor | float:
        """The global batch's mean loss from each process's share of it (a sum over processes)."""
        if self.world_size == 1:
            return loss
        total = torch.as_tensor(loss).detach().clone()
        distributed.all_reduce(total)
        return total

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every process: all of them stop or go on at the same step."""
        if self.world_size == 1:
            return flag
        decided = torch.tensor([int(flag)], device=self._collective_device())
        distributed.broadcast(decided, src=0)
        return bool(decided.item())

    def _collective_device(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")


SINGLE = Ranks()


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Put a sharded model's weights back into their shards. After a forward the root's stay gathered
    (FSDP expects a backward to need them), as plain tensors that neither see a write to the shards (early
    stopping's restore) nor are the shards a gather reads."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A shard's whole tensor, gathered from every process (each must call it, in the same order)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def whole_on_cpu(value: object) -> object:
    """A shard's whole tensor gathered onto the CPU (as every process must call it); anything else as is.
    For the optimizer's moments: gathered all at once, they would take twice the weights on the device."""
    return value.full_tensor().cpu() if isinstance(value, DTensor) else value


def sharded_like(value: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """`value`, a whole tensor every process holds alike, cut to `parameter`'s shard (no communication)."""
    if not isinstance(parameter, DTensor):
        return value
    local = value.to(parameter.device)
    return distribute_tensor(local, parameter.device_mesh, parameter.placements, src_data_rank=None)


def gradient_sync(model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager[object]:
    """Under DDP or FSDP, the backward of a step's last pass averages the gradients; the others' add up
    locally."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if last or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    return {name: tensor[start:stop] for name, tensor in batch.items()}


def _loss_units(batch: Batch, causal_lm: bool) -> float:
    """What the task's mean loss divides by: target tokens for causal_lm (each label predicts from the
    position before it, so the first of a row predicts nothing), else examples."""
    if causal_lm:
        return float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return float(len(batch["attention_mask"]))


def processes_offered(configured: int | None) -> int:
    """How many processes this machine gives one job: `configured`, else its GPUs, else its CPUs."""
    if configured is not None:
        return configured
    return torch.cuda.device_count() if torch.cuda.is_available() else len(os.sched_getaffinity(0))


def join(backend: str | None = None) -> Ranks:
    """Join the job's process group (torchrun's environment says where) and name this process's device.

    gloo on the CPU, nccl on CUDA: each process takes the GPU of its local rank.
    """
    on_cuda = torch.cuda.is_available()
    distributed.init_process_group(backend or ("nccl" if on_cuda else "gloo"), timeout=COLLECTIVE_TIMEOUT)
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    device = torch.device("cpu")
    if on_cuda:
        # torchrun --standalone runs every process on this machine: the local rank is the rank.
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return Ranks(rank, world_size, device)


def leave() -> None:
    if distributed.is_initialized():
        distributed.destroy_process_group()
