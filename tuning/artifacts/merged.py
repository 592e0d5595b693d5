"""`merged/`: the fine-tuned model as one plain transformers model, W + ΔW folded into every weight.

Any layer a method wrapped and can fold (LoRA's W + s·B·A, delta tuning's W + Δw) exposes
`merged_layer()`, a plain layer of the base's type; methods that train pretrained tensors directly
(full, partial, BitFit) leave plain layers already. What is saved then loads with
`AutoModelForSequenceClassification.from_pretrained(artifact / "merged")`, no deltatune needed, and
can be the base model of a later job. A mean-pooled job's folder also carries sentence-transformers'
`modules.json` and `1_Pooling/config.json` saying so (the class itself reads its first token: the
README shows the few lines that pool the mean), and a job on it resolves head.pooling "auto" to mean.
"""

import copy
from pathlib import Path

from torch import nn
from transformers import PreTrainedModel

from tuning.artifacts.job import TrainedJob, Written
from tuning.methods.projections import replace_module
from tuning.parts.pooling import write_pooling_files

MERGED_DIR = "merged"


def write(out_dir: Path, job: TrainedJob) -> Written:
    """Save the merged model and its tokenizer into `out_dir` (the artifact's `merged/`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = merged_copy(job.model)
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"a merged export needs a transformers model, not {type(model).__name__}")
    model.save_pretrained(out_dir)
    job.tokenizer.save_pretrained(out_dir)
    write_pooling_files(out_dir, job.spec.head.pooling, model.config.hidden_size)
    files = sorted(
        f"{out_dir.name}/{path.relative_to(out_dir).as_posix()}"
        for path in out_dir.rglob("*")
        if path.is_file()
    )
    return Written(
        files, {"merged": {"folder": out_dir.name, "merged_layers": merged_layer_count(job.model)}}
    )


def merged_copy(model: nn.Module) -> nn.Module:
    """`model` with every mergeable wrapper replaced by its plain merged layer: a deep copy, or `model`
    itself when it has none (full, partial, BitFit: the weights are already the fine-tuned ones)."""
    if merged_layer_count(model) == 0:
        return model
    merged = copy.deepcopy(model)
    mergeable = [name for name, module in merged.named_modules() if _mergeable(module)]
    for name in mergeable:
        replace_module(merged, name, merged.get_submodule(name).merged_layer())  # type: ignore[operator]
    return merged


def merged_layer_count(model: nn.Module) -> int:
    return sum(1 for module in model.modules() if _mergeable(module))


def _mergeable(module: nn.Module) -> bool:
    return callable(getattr(module, "merged_layer", None))
