"""Partial fine-tuning (Yosinski et al. 2014, arXiv:1411.1792): θ ← θ − η·∇L(θ) for θ in the chosen
modules only; every other pretrained tensor keeps its value bit for bit.

Three ways to choose: glob patterns over module names, the last N transformer layers, or the head
alone (a linear probe). "The last N layers" trains everything above the cut: layers L−N..L−1 and
the backbone modules that run after the stack (BERT's pooler, GPT-2's final LayerNorm). Yosinski et
al. freeze the layers below the cut and train all above it; a frozen module between trained layers
and the head (ln_f normalises exactly what the trained layers emit) would only limit them.
"""

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from tuning.errors import SpecError
from tuning.layers import LayerMap
from tuning.methods.apply import Applied, MethodContext
from tuning.methods.partial.options import PartialMethod

EXAMPLE_NAMES = 8  # module names an error message shows, enough to see the naming scheme


def apply(model: nn.Module, options: PartialMethod, context: MethodContext) -> Applied:
    if options.head_only:
        return Applied("linear probe: only the head trains", {"trained_modules": []})
    if options.last_n_layers is not None:
        chosen = last_layers(context.layers, options.last_n_layers, context.head_modules)
    else:
        chosen = matching_modules(model, options.modules or [], context.head_modules)
    for name in chosen:
        model.get_submodule(name).requires_grad_(True)
    tensors = sum(1 for _, parameter in model.named_parameters() if parameter.requires_grad)
    return Applied(
        f"partial fine-tune of {len(chosen)} modules ({tensors} tensors with the head)",
        {"trained_modules": chosen},
    )


def last_layers(layers: LayerMap, n: int, head_modules: Sequence[str]) -> list[str]:
    """The last `n` layers of the stack and the backbone modules after it (the head trains anyway)."""
    if n > layers.count:
        raise SpecError(
            f"last_n_layers is {n}, but the base model has {layers.count} transformer layers",
            param="method.last_n_layers",
        )
    stack = [f"{layers.stack}.{index}" for index in range(layers.count - n, layers.count)]
    return stack + [name for name in layers.top if name not in head_modules]


def matching_modules(model: nn.Module, patterns: Sequence[str], head_modules: Sequence[str]) -> list[str]:
    """Outermost modules whose full name matches a pattern; raises SpecError for patterns matching none."""
    names = [name for name, _ in model.named_modules() if name and not _is_under(name, head_modules)]
    unmatched = [p for p in patterns if not any(fnmatchcase(name, p) for name in names)]
    if unmatched:
        raise SpecError(
            f"modules {unmatched} match no module of this model (outside the head, which trains anyway); "
            f"patterns are globs over full module names, e.g. {', '.join(example_names(model, names))}",
            param="method.modules",
        )
    matched = [name for name in names if any(fnmatchcase(name, p) for p in patterns)]
    # A module inside a matched one trains with it: listing it again would only lengthen the summary.
    outermost = [name for name in matched if not _is_under_any_other(name, matched)]
    if not any(True for name in outermost for _ in model.get_submodule(name).parameters()):
        raise SpecError(
            f"modules {list(patterns)} match only modules without parameters ({', '.join(outermost[:4])})",
            param="method.modules",
        )
    return outermost


def example_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Names of modules that hold parameters of their own, spread over the model, for error messages."""
    owners = [
        name for name in names if any(True for _ in model.get_submodule(name).parameters(recurse=False))
    ]
    step = max(1, len(owners) // EXAMPLE_NAMES)
    return owners[::step][:EXAMPLE_NAMES]


def _is_under_any_other(name: str, others: Sequence[str]) -> bool:
    return any(name.startswith(other + ".") for other in others)


def _is_under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
