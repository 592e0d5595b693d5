"""Writing a trained job's artifact, in the layout its method calls for.

- PEFT's layout for the methods PEFT also implements (LoRA, prompt tuning, prefix tuning) with a
  linear head: `adapter_config.json` + `adapter_model.safetensors`, loadable with
  `peft.PeftModel.from_pretrained`. Each such method registers its writer
  (`tuning/methods/<type>/artifact.py`); what they share is in `peft.py`.
- deltatune's layout for everything else (`deltatune_layout.py`): one safetensors of only the tensors
  the job changed (as θ−θ₀) or added (as values).
- Optional extras in sub-folders: `merged/` (a full `save_pretrained` model) and, for delta jobs,
  `lora/` (Δw compressed to LoRA by truncated SVD, in PEFT's layout).
- `deltatune.json` last: a folder holding the manifest holds everything it describes.
"""

from pathlib import Path

from tuning.artifacts import compress, deltatune_layout, merged
from tuning.artifacts.job import ArtifactLayout, TrainedJob, Written
from tuning.artifacts.manifest import MANIFEST, Layout, manifest, write_json
from tuning.errors import SpecError
from tuning.methods import method_entry

__all__ = ["TOKENIZER_DIR", "TrainedJob", "Written", "artifact_layout", "write_artifact"]

TOKENIZER_DIR = "tokenizer"


def write_artifact(out_dir: Path, job: TrainedJob) -> list[str]:
    """Write the whole artifact into `out_dir`; return the relative paths of its files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    layout: Layout = "peft" if job.spec.peft_layout else "deltatune"
    parts = [artifact_layout(job.spec.method.type, layout).write(out_dir, job)]
    if job.tokenizer_changed:
        job.tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
        parts.append(Written(sorted(_relative_files(out_dir / TOKENIZER_DIR, out_dir))))
    if job.spec.export.merged:
        parts.append(merged.write(out_dir / merged.MERGED_DIR, job))
    if job.spec.export.compress_to_lora:
        parts.append(compress.write(out_dir / compress.LORA_DIR, job))
    files = [name for part in parts for name in part.files]
    extra = {key: value for part in parts for key, value in part.manifest.items()}
    write_json(
        out_dir / MANIFEST,
        manifest(
            job.spec,
            layout=layout,
            labels=job.labels,
            base_model_path=job.base_model_path,
            metrics=job.metrics,
            files=files + [MANIFEST],
            extra=extra,
        ),
    )
    return files + [MANIFEST]


def artifact_layout(method: str, layout: Layout) -> ArtifactLayout:
    """The module that writes and reads the trained tensors of a `method` job in `layout`."""
    if layout == "deltatune":
        return deltatune_layout
    peft_artifact = method_entry(method).peft_artifact
    if peft_artifact is None:
        raise SpecError(f"an artifact in PEFT's layout cannot hold a {method} job", param="method.type")
    return peft_artifact()


def _relative_files(folder: Path, root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in folder.rglob("*") if path.is_file()]
