"""The method catalogue: one package per method under `tuning/methods/<type>/`, listed here once.

Each package registers itself (`registry.register_method`) with its torch-free options, estimate,
compatibility rules and traits, and says where its torch half lives. Everything that lists methods
derives from `METHODS`: the spec's `Method` union, `GET /v1/methods`, the estimate, the config checks,
the artifact layout, the method matrix, the benchmark and the learning test.

Importing this package imports no torch: the API validates specs with it. Adding a method is one new
package, its tests, and its line below.
"""

from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from tuning.errors import SpecError
from tuning.methods import (
    adapter,
    bitfit,
    delta,
    full,
    input_adapter,
    lora,
    partial,
    prefix_tuning,
    prompt_tuning,
)
from tuning.methods.registry import MethodEntry, by_name
from tuning.spec_base import MethodOptions

# In the order GET /v1/methods lists them.
METHODS: dict[str, MethodEntry[Any]] = by_name(
    [
        full.METHOD,
        partial.METHOD,
        bitfit.METHOD,
        adapter.METHOD,
        input_adapter.METHOD,
        delta.METHOD,
        prompt_tuning.METHOD,
        prefix_tuning.METHOD,
        lora.METHOD,
    ]
)

METHOD_MODELS: tuple[type[MethodOptions], ...] = tuple(entry.options for entry in METHODS.values())

if TYPE_CHECKING:
    Method = MethodOptions
else:
    # A discriminated union keyed by `type`: the spec name is both the discriminator and the registry key.
    Method = Annotated[reduce(or_, METHOD_MODELS), Field(discriminator="type")]

# Methods that leave every pretrained weight's effective value alone: they only add modules or tokens.
ADDITIVE_METHODS = frozenset(name for name, entry in METHODS.items() if entry.additive)
# Methods whose trained delta can be folded into the base weights for a merged export.
MERGEABLE_METHODS = frozenset(name for name, entry in METHODS.items() if entry.mergeable)
# Methods written in PEFT's layout (with a linear head); every other artifact uses deltatune's layout.
PEFT_METHODS = frozenset(name for name, entry in METHODS.items() if entry.layout == "peft")
# Methods whose Δw export.lora_rank / lora_energy compress to LoRA.
LORA_COMPRESSIBLE_METHODS = frozenset(name for name, entry in METHODS.items() if entry.compresses_to_lora)


def method_entry(name: str) -> MethodEntry[Any]:
    """The registered method `name` (a spec's or a manifest's `method.type`)."""
    try:
        return METHODS[name]
    except KeyError:
        raise SpecError(
            f"method {name!r} is not one this deltatune knows: {', '.join(METHODS)}", param="method.type"
        ) from None
