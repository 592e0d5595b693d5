"""deltatune's own artifact layout, for every method PEFT does not implement (and any MLP head).

`delta.safetensors` holds only what the job changed or added, under the model's own parameter names:

- a pretrained tensor the job trained directly is stored as its change θ−θ₀ (the dense delta of a
  full fine-tune, BitFit's bias deltas, ...): a base model plus the file gives the fine-tuned model,
  and the delta itself can be inspected, scaled or compressed;
- a tensor the job added (head, adapters, Δw, input encoder, new token embeddings) is stored as is.

The safetensors metadata says which is which (`"kind"` per key), so the file is self-describing.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tuning.artifacts.job import TrainedJob, Written
from tuning.artifacts.peft import cpu_tensors
from tuning.errors import SpecError

DELTA_WEIGHTS = "delta.safetensors"
DIFFERENCE = "difference"  # stored θ−θ₀; add it to the base
VALUE = "value"  # stored θ; copy it


def write(out_dir: Path, job: TrainedJob) -> Written:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, kinds = delta_state_dict(job)
    save_file(
        cpu_tensors(tensors), out_dir / DELTA_WEIGHTS, metadata={"format": "pt", "kinds": json.dumps(kinds)}
    )
    counts = {kind: sum(1 for k in kinds.values() if k == kind) for kind in (DIFFERENCE, VALUE)}
    return Written([DELTA_WEIGHTS], {"delta": {"file": DELTA_WEIGHTS, "tensors": counts}})


def delta_state_dict(job: TrainedJob) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor the method trains: differences for pretrained ones, values for added ones.

    Relies on requires_grad marking the method's whole trainable set, as fit.py leaves it after
    training (a gradual-unfreezing schedule that stopped early is undone first).
    """
    tensors: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    for name, parameter in job.model.named_parameters():
        if name in job.snapshot.values:
            start = job.snapshot.values[name].to(parameter.device)
            tensors[name], kinds[name] = parameter.detach() - start, DIFFERENCE
        elif name not in job.pretrained and parameter.requires_grad:
            tensors[name], kinds[name] = parameter.detach(), VALUE
    return tensors, kinds


def load(model: nn.Module, artifact_dir: Path) -> None:
    """Apply `delta.safetensors` to a model rebuilt from the manifest's spec (base + head + method)."""
    path = artifact_dir / DELTA_WEIGHTS
    with safe_open(str(path), framework="pt") as stored:
        kinds: dict[str, str] = json.loads((stored.metadata() or {}).get("kinds", "{}"))
        parameters = dict(model.named_parameters())
        unknown = sorted(set(kinds) - set(parameters))
        if unknown:
            raise SpecError(f"artifact does not fit its base model: unknown tensors {unknown[:5]}")
        with torch.no_grad():
            for name, kind in kinds.items():
                tensor = stored.get_tensor(name).to(parameters[name].device, parameters[name].dtype)
                if kind == DIFFERENCE:
                    parameters[name].add_(tensor)
                else:
                    parameters[name].copy_(tensor)
