"""What every artifact in PEFT's layout shares: the file names, PEFT's key prefix, the head saved
the way PEFT saves `modules_to_save`, the task fields of `adapter_config.json`, and loading the tensors
back. Used by the PEFT-layout methods' writers (tuning/methods/<type>/artifact.py) and by the SVD
compression of a delta job (`compress.py`).
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tuning.errors import SpecError
from tuning.spec import JobSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def head_state_dict(model: nn.Module, head_modules: Sequence[str], prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor of the head modules, under `prefix` + their module path."""
    return {
        f"{prefix}{head}.{key}": tensor
        for head in head_modules
        for key, tensor in model.get_submodule(head).state_dict().items()
    }


def cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous CPU tensors that share no storage."""
    return {key: tensor.detach().to("cpu", copy=True).contiguous() for key, tensor in tensors.items()}


def peft_task_fields(spec: JobSpec, head_modules: Sequence[str]) -> dict[str, Any]:
    """PEFT's task type, which picks the PeftModel class a reload builds, and the head saved whole.

    A causal LM predicts with its own pretrained head: nothing is trained in full, so nothing is listed.
    """
    if spec.task == "causal_lm":
        return {"task_type": "CAUSAL_LM"}
    return {"task_type": "SEQ_CLS", "modules_to_save": list(head_modules)}


def load_peft_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str = PEFT_PREFIX) -> None:
    """Copy prefixed tensors into the model; every trainable tensor must be covered, nothing extra."""
    own = {prefix + name: tensor for name, tensor in model.state_dict().items()}
    unknown = sorted(set(tensors) - set(own))
    expected = {prefix + name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(expected - set(tensors))
    if unknown or missing:  # a different base, or a spec edited after training
        raise SpecError(f"adapter does not fit its base model: extra {unknown[:5]}, missing {missing[:5]}")
    with torch.no_grad():
        for key, tensor in tensors.items():
            own[key].copy_(tensor)
