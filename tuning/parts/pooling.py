"""How a classifier reads one vector off the text: the model class's first token, or the tokens' mean.

`head.pooling`:

    first  the model class's own: BERT's pooler (dense + tanh) on the first token, GPT-style models'
           last real token; what transformers' classes do.
    mean   the mean of the last hidden states over the attention mask (real tokens only, padding
           never counts), fed straight to the classifier: no pooler dense, no tanh, so the head is
           the classifier alone. How sentence-transformers models were trained to be read (Reimers &
           Gurevych 2019, Sentence-BERT, arXiv:1908.10084), and what a mean-pool linear probe reads.
    auto   mean where the base model's folder says sentence-transformers pools it by the mean
           (`modules.json` lists a Pooling module whose `config.json` has `pooling_mode_mean_tokens`),
           else first. Resolved once from the folder, reported with the other auto choices; the
           manifest records the resolved value.

Mean pooling works for BERT-style classifiers whose class reads the backbone's pooler output (BERT,
ALBERT, MiniLM, ...): the pooler is replaced by `MeanPooler` (tuning.parts.mean_pooler, apart
because it needs torch, which the API never imports), so the model stays the transformers class
called the same way, and every method, the frozen-prefix cut and the artifacts see the same module
names. Other families (RoBERTa's dense head, DistilBERT's pre_classifier, decoders' last-token
`score`) are refused with a SpecError naming `head.pooling`.

Virtual tokens: the mean is over what the backbone is given. Prompt tuning's tokens are part of its
input (their mask is ones, PEFT's rule), so they are averaged in: the prompt steers the pooled vector
directly. Prefix tuning's live only in the attention keys and values, not in the hidden states, so
only the text is averaged (the mask's prefix columns are dropped).
"""

import json
from pathlib import Path
from typing import Any, Literal

from tuning.errors import SpecError

Pooling = Literal["first", "mean"]

# config.json model_type of classifiers whose class feeds the backbone's `pooler` output to the head.
POOLER_MODELS = frozenset({"bert", "albert", "ernie", "megatron-bert", "roc_bert", "nezha"})
ST_MODULES = "modules.json"
ST_POOLING_TYPE = "sentence_transformers.models.Pooling"


def sentence_transformers_pooling(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers folder declares ("mean", "cls", "max", ...); None: none."""
    try:
        modules = json.loads((model_dir / ST_MODULES).read_text())
        entry = next(m for m in modules if str(m.get("type", "")).endswith("models.Pooling"))
        config = json.loads((model_dir / entry["path"] / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return None
    modes = [
        key.removeprefix("pooling_mode_")
        for key, value in config.items()
        if key.startswith("pooling_mode_") and value is True
    ]
    if modes == ["mean_tokens"]:
        return "mean"
    return ",".join(modes) or None


def mean_refusal(model_type: str) -> str | None:
    """Why a model of `model_type` cannot mean-pool (None: it can)."""
    if model_type in POOLER_MODELS:
        return None
    return (
        "head.pooling 'mean' replaces the pooler of BERT-style classifiers "
        f"({', '.join(sorted(POOLER_MODELS))}); "
        f"a '{model_type or 'unknown'}' model's class picks its token itself: use 'first' or 'auto'"
    )


def resolve_pooling(requested: str, model_dir: Path) -> tuple[Pooling, str]:
    """`head.pooling` as "first" or "mean" for the base model in `model_dir`, and why."""
    model_type = _model_type(model_dir)
    if requested == "first":
        return "first", "the spec asks for the model class's first-token pooling"
    refusal = mean_refusal(model_type)
    if requested == "mean":
        if refusal is not None:
            raise SpecError(refusal, param="head.pooling")
        return "mean", "the spec asks for mean pooling"
    declared = sentence_transformers_pooling(model_dir)
    if declared != "mean":
        said = f"declares {declared} pooling" if declared else "declares no sentence-transformers pooling"
        return "first", f"the base model {said}: the model class's own first-token pooling"
    if refusal is not None:
        return "first", f"the base model declares mean pooling, but a '{model_type}' classifier cannot use it"
    return (
        "mean",
        "the base model was trained for mean pooling (sentence-transformers 1_Pooling): "
        "the classifier reads the tokens' mean",
    )


def _model_type(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        return ""


def write_pooling_files(out_dir: Path, pooling: str, hidden: int) -> list[str]:
    """Beside a saved model: sentence-transformers' files declaring mean pooling (none for first), so
    the folder says how it is read and a later job on it resolves "auto" the same. Relative paths."""
    written = []
    for name, content in _pooling_files(pooling, hidden).items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
        written.append(name)
    return written


def _pooling_files(pooling: str, hidden: int) -> dict[str, Any]:
    if pooling != "mean":
        return {}
    return {
        ST_MODULES: [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING_TYPE},
        ],
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    }
