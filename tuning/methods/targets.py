"""Module names a method targets (LoRA's and delta tuning's `target_modules`, LoRA's `rank_pattern`),
checked against the base model's tensor names before anything loads: a name that matches no layer is
a 422 at `POST /v1/jobs` instead of a job that fails, or silently adapts less, on the worker.

No torch: the names come from the safetensors headers (`ModelConfig.tensors`). A model whose files
have no safetensors header passes, and the worker, which sees the real modules, has the last word.
"""

from collections.abc import Collection, Sequence

from tuning.errors import SpecError
from tuning.methods.base_model import ModelConfig, layer_index

# How many of the model's own names a refusal lists: enough to spot the right one, not the whole model.
SHOWN_NAMES = 12


def matches(module: str, target: str) -> bool:
    """The worker's rule (the name, or a dotted suffix of it: PEFT's), and a full name written with the
    task model's prefix ("bert.encoder…") for a file saved without it ("encoder…")."""
    return module == target or module.endswith("." + target) or target.endswith("." + module)


def check_targets(
    names: Sequence[str],
    config: ModelConfig,
    *,
    param: str,
    layers: Collection[int] | None = None,
) -> None:
    """SpecError naming every one of `names` that matches no Linear or Conv1D layer (within `layers`,
    the transformer layers a method is limited to, when given) and a few names that exist."""
    modules = config.projection_modules()
    if not modules:
        return
    within = modules if layers is None else [name for name in modules if layer_index(name) in layers]
    unmatched = [name for name in names if not any(matches(module, name) for module in within)]
    if not unmatched:
        return
    where = "" if layers is None else f" in layers {sorted(layers)}"
    raise SpecError(
        f"{param.rsplit('.', 1)[-1]} {unmatched} match no Linear or Conv1D layer of "
        f"{config.describe()}{where}; its layers end in: {', '.join(_suffixes(modules))} "
        f"(e.g. {', '.join(_examples(within or modules))})",
        param=param,
    )


def _suffixes(modules: Sequence[str]) -> list[str]:
    found = sorted({name.rpartition(".")[2] for name in modules})
    return found[:SHOWN_NAMES] + (["..."] if len(found) > SHOWN_NAMES else [])


def _examples(modules: Sequence[str]) -> list[str]:
    return list(modules[:3])
