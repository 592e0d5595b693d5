"""`lora/`: a delta job's dense Δw compressed to LoRA by truncated SVD, in PEFT's layout.

Δw = U·S·Vᵀ; keeping the r largest singular values gives B = U_r·√S_r and A = √S_r·V_rᵀ, the best
rank-r approximation in Frobenius norm (Eckart & Young 1936), with ‖Δw − B·A‖² = Σ_{i>r} σᵢ². The
rank is either fixed (`export.lora_rank`) or, per layer, the smallest keeping a fraction of Σσ²
(`export.lora_energy`). `lora_alpha` equals each layer's rank, so PEFT's scaling alpha/r is 1 and
PEFT computes W + B·A. The relative error of every layer, and overall, goes into the manifest.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tuning.artifacts.job import TrainedJob, Written
from tuning.artifacts.manifest import write_json
from tuning.artifacts.peft import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_PREFIX,
    cpu_tensors,
    head_state_dict,
)
from tuning.errors import SpecError
from tuning.methods.delta.model import DeltaLinear, delta_layers

LORA_DIR = "lora"


@dataclass(frozen=True)
class LowRank:
    """Δw ≈ B·A, in nn.Linear's (out, in) orientation."""

    lora_A: torch.Tensor  # (rank, in)
    lora_B: torch.Tensor  # (out, rank)
    error: float  # ‖Δw − B·A‖ / ‖Δw‖ (Frobenius); 0 for Δw = 0
    error_norm: float  # ‖Δw − B·A‖
    norm: float  # ‖Δw‖

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]


def write(out_dir: Path, job: TrainedJob) -> Written:
    """Write the compressed LoRA into `out_dir` (the artifact's `lora/`); files relative to the artifact."""
    export = job.spec.export
    report = write_lora(
        out_dir,
        job.model,
        job.head_modules,
        base_model=job.spec.base_model,
        rank=export.lora_rank,
        energy=export.lora_energy,
    )
    files = [f"{out_dir.name}/{name}" for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG)]
    return Written(files, {"lora_compression": {"folder": out_dir.name, **report}})


def compress_delta_artifact(
    artifact_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    model_dirs: Sequence[Path] = (),
) -> dict[str, Any]:
    """Compress a finished delta job's artifact to a PEFT LoRA adapter in `out_dir`; return the report.

    The model is rebuilt with `tuning.load_artifact` (base model found via `model_dirs`).
    """
    from tuning.artifacts.load import load_artifact  # load.py imports this package: a real cycle

    loaded = load_artifact(artifact_dir, model_dirs, device=torch.device("cpu"))
    if loaded.manifest["method"] != "delta":
        raise SpecError(
            f"only a delta job's Δw can be compressed; this artifact is {loaded.manifest['method']}"
        )
    return write_lora(
        Path(out_dir),
        loaded.model,
        trained_modules(loaded.model),
        base_model=loaded.manifest["spec"]["base_model"],
        rank=rank,
        energy=energy,
    )


def write_lora(
    out_dir: Path,
    model: nn.Module,
    head_modules: Sequence[str],
    *,
    base_model: str,
    rank: int | None,
    energy: float | None,
) -> dict[str, Any]:
    """Compress every Δw of `model`, write adapter_config.json and adapter_model.safetensors, report."""
    layers = delta_layers(model)
    if not layers:
        raise SpecError("the model has no delta-tuned layer to compress")
    factors = {
        name: truncated_svd(out_in_delta(layer), rank=rank, energy=energy) for name, layer in layers.items()
    }
    tensors: dict[str, torch.Tensor] = {}
    for name, low_rank in factors.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = low_rank.lora_A
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = low_rank.lora_B
    tensors.update(head_state_dict(model, head_modules, PEFT_PREFIX))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(cpu_tensors(tensors), out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    fan_in_fan_out = any(layer.fan_in_fan_out for layer in layers.values())
    write_json(out_dir / ADAPTER_CONFIG, lora_config(factors, head_modules, base_model, fan_in_fan_out))
    return compression_report(factors, rank=rank, energy=energy)


def truncated_svd(delta: torch.Tensor, *, rank: int | None = None, energy: float | None = None) -> LowRank:
    """The best approximation of `delta` (out, in) of the given rank, or the smallest keeping `energy`."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    # float64: the error at full rank should be the storage dtype's rounding, not the SVD's.
    u, s, vh = torch.linalg.svd(delta.detach().to(torch.float64), full_matrices=False)
    kept = min(rank, s.numel()) if rank is not None else energy_rank(s, energy or 1.0)
    root = s[:kept].sqrt()
    lora_b = (u[:, :kept] * root).to(delta.dtype)
    lora_a = (root[:, None] * vh[:kept]).to(delta.dtype)
    exact = delta.detach().to(torch.float64)
    error_norm = float(torch.linalg.matrix_norm(exact - lora_b.double() @ lora_a.double()))
    norm = float(torch.linalg.matrix_norm(exact))
    return LowRank(lora_a, lora_b, error_norm / norm if norm > 0 else 0.0, error_norm, norm)


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest r with Σ_{i≤r} σᵢ² ≥ energy·Σσ² (at least 1: PEFT needs a rank)."""
    squares = singular_values.to(torch.float64) ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(squares, dim=0) / total
    # The slack absorbs rounding in the cumulative sum, so energy 1.0 stops at the last non-zero σ.
    short = int((kept < energy - 1e-9).sum())
    return min(short + 1, singular_values.numel())


def out_in_delta(layer: DeltaLinear) -> torch.Tensor:
    """Δw as nn.Linear stores it, (out, in): the orientation of PEFT's lora_B @ lora_A."""
    delta = layer.delta_weight()
    return delta.T if layer.fan_in_fan_out else delta


def lora_config(
    factors: Mapping[str, LowRank], head_modules: Sequence[str], base_model: str, fan_in_fan_out: bool
) -> dict[str, Any]:
    """PEFT's config: the most common rank as r, the others in rank_pattern; alpha = rank everywhere."""
    ranks = {name: low_rank.rank for name, low_rank in factors.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    others = {name: rank for name, rank in ranks.items() if rank != r}
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": r,
        "lora_dropout": 0.0,
        # Exact names: the layers that had a Δw, whatever the spec's targets matched.
        "target_modules": sorted(ranks),
        "modules_to_save": list(head_modules),
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True,
    }
    if others:
        config["rank_pattern"] = others
        config["alpha_pattern"] = others
    return config


def compression_report(
    factors: Mapping[str, LowRank], *, rank: int | None, energy: float | None
) -> dict[str, Any]:
    """Per layer and overall: rank and relative Frobenius error ‖Δw − B·A‖ / ‖Δw‖."""
    error_total = sum(low_rank.error_norm**2 for low_rank in factors.values()) ** 0.5
    norm_total = sum(low_rank.norm**2 for low_rank in factors.values()) ** 0.5
    return {
        "rank": rank,
        "energy": energy,
        "relative_error": error_total / norm_total if norm_total > 0 else 0.0,
        "max_relative_error": max(low_rank.error for low_rank in factors.values()),
        "parameters": sum(low_rank.lora_A.numel() + low_rank.lora_B.numel() for low_rank in factors.values()),
        "layers": {
            name: {"rank": low_rank.rank, "relative_error": low_rank.error}
            for name, low_rank in factors.items()
        },
    }


def trained_modules(model: nn.Module) -> list[str]:
    """The modules trained in full besides Δw (the head): PEFT's `modules_to_save`.

    A parameter of a top-level child other than the backbone names that child (`classifier`, even
    for an MLP head); one inside the backbone (a module the checkpoint lacked) names its own module.
    """
    backbone = getattr(model, "base_model_prefix", "")
    modules: list[str] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or isinstance(
            model.get_submodule(name.rpartition(".")[0]), DeltaLinear
        ):
            continue
        top = name.split(".")[0]
        module = top if top != backbone else name.rpartition(".")[0]
        if module not in modules:
            modules.append(module)
    return modules
