"""The training loop's whole state at a resume point, and the files it is kept in (see tuning.resume).

Everything here is what tuning.train cannot recompute: prepare() rebuilds the model, θ₀ and the
regularizers' references deterministically from the seed, and the learning rate and a gradual-unfreezing
stage are functions of the step; the rest (weights, optimizer moments, counters, histories, random
streams, the data order) a resumed run takes from here.
"""

import hashlib
import json
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE = "state.json"
TRAINABLE = "trainable.safetensors"
BEST = "early_stopping.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.pt"


@dataclass
class TrainingState:
    step: int  # optimizer steps completed
    epoch: int  # the 0-based epoch the next step belongs to
    batches_done: int  # of `epoch`'s batches, already trained (0 at an epoch's start)
    epochs_done: float  # step / steps per epoch, for the manifest
    loop: dict[str, Any]  # JSON: progress, evaluations, early stopping, kept checkpoints, trainable now
    trainable: dict[str, torch.Tensor]  # by parameter name, on the CPU
    optimizer: dict[str, Any]  # the optimizer's state_dict; saved at once, as it shares the live tensors
    rng: dict[str, Any]  # capture_rng's
    order: list[int] | None = None  # `epoch`'s data order, while it is under way
    best: dict[str, torch.Tensor] = field(default_factory=dict)  # early stopping's best weights by name

    def describe(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": round(self.epochs_done, 4),
            "position": {"epoch": self.epoch, "batches_done": self.batches_done},
        }

    def save(self, folder: Path) -> list[str]:
        files = [STATE, TRAINABLE, OPTIMIZER, RNG]
        state = {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done, **self.loop}
        (folder / STATE).write_text(json.dumps({**state, "epochs_done": self.epochs_done}, indent=1) + "\n")
        save_file(_contiguous(self.trainable), str(folder / TRAINABLE))
        if self.best:
            save_file(_contiguous(self.best), str(folder / BEST))
            files.append(BEST)
        torch.save(self.optimizer, folder / OPTIMIZER)
        order = torch.tensor(self.order, dtype=torch.int64) if self.order is not None else None
        torch.save({**self.rng, "epoch_order": order}, folder / RNG)
        return files

    @classmethod
    def load(cls, folder: Path) -> "TrainingState":
        loop = json.loads((folder / STATE).read_text())
        step, epoch, batches_done = loop.pop("step"), loop.pop("epoch"), loop.pop("batches_done")
        epochs_done = loop.pop("epochs_done")
        rng = torch.load(folder / RNG, weights_only=True)
        order = rng.pop("epoch_order")
        return cls(
            step=step,
            epoch=epoch,
            batches_done=batches_done,
            epochs_done=epochs_done,
            loop=loop,
            trainable=load_file(str(folder / TRAINABLE)),
            optimizer=torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True),
            rng=rng,
            order=order.tolist() if order is not None else None,
            best=load_file(str(folder / BEST)) if (folder / BEST).exists() else {},
        )


def capture_rng(data_order: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from: torch's (dropout), CUDA's where it is in use, Python's and
    NumPy's (nothing of ours draws from them, but libraries may), and the data order's generator."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "data_order": data_order.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "numpy" in sys.modules:  # imported by transformers; stored as tensors, which weights_only loads
        name, keys, position, has_gauss, cached = sys.modules["numpy"].random.get_state()
        state["numpy"] = (name, torch.from_numpy(keys.astype("int64")), position, has_gauss, cached)
    return state


def restore_rng(state: Mapping[str, Any], data_order: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    data_order.set_state(state["data_order"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    if "numpy" in state:
        import numpy

        name, keys, position, has_gauss, cached = state["numpy"]
        numpy.random.set_state((name, keys.numpy().astype("uint32"), position, has_gauss, cached))


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """One digest of named tensors' exact values (EWC's Fisher: is a resumed attempt's estimate the same?)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
