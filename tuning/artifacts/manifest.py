"""`deltatune.json`: the manifest every artifact carries, whatever its layout.

It makes the artifact describe itself: the layout, the full job spec, the label map, the base model
and the sha256 of its weights, the metrics, the files, and the library versions it was made with.
"""

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tuning.data import Label
from tuning.spec import JobSpec

MANIFEST = "deltatune.json"
MANIFEST_FORMAT_VERSION = 2
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.bin")

Layout = Literal["peft", "deltatune"]


def manifest(
    spec: JobSpec,
    *,
    layout: Layout,
    labels: Sequence[Label],
    base_model_path: Path,
    metrics: Mapping[str, float],
    files: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "layout": layout,
        "method": spec.method.type,
        "task": spec.task,
        "spec": spec.model_dump(mode="json"),
        "labels": {str(index): label for index, label in enumerate(labels)},
        # What the classifier's head reads ("first" or "mean", head.pooling resolved; tuning.parts.pooling).
        **({"pooling": spec.head.pooling} if spec.task == "sequence_classification" else {}),
        "base_model": {"id": spec.base_model, "weights_sha256": weights_sha256(base_model_path)},
        "metrics": dict(metrics),
        "files": list(files),
        **(extra or {}),
        "versions": {name: _version(name) for name in ("deltatune", "torch", "transformers", "peft")},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    content: dict[str, Any] = json.loads((artifact_dir / MANIFEST).read_text())
    return content


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each weights file of the base model, so a reload can tell if the base changed."""
    files = sorted({path for pattern in WEIGHT_FILE_PATTERNS for path in model_dir.glob(pattern)})
    return {path.name: _sha256(path) for path in files}


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None  # e.g. deltatune run from a source tree that was never installed
