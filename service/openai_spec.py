"""An OpenAI create request (POST /v1/fine_tuning/jobs) as deltatune's JobRequest: the same job then
goes through service.submit.submit_job exactly as one from POST /v1/jobs.

- `model` is base_model; a `fine_tuned_model` name becomes the job id it names.
- `method` `supervised` (or none) is deltatune's default method, LoRA; one of deltatune's own methods
  can be given by its `type` instead. `dpo` and `reinforcement` are refused, saying so.
- n_epochs, batch_size and learning_rate_multiplier (× deltatune's default learning rate) map onto
  deltatune's hyperparameters; `"auto"` leaves its default. deltatune's own hyperparameters may stand
  beside them in the top-level `hyperparameters`.
- Left out, `task` follows the training file: chat, prompt/completion and text files train a causal
  language model as they are (chat on a base model without a chat template uses ChatML);
  `checkpoints` keeps one at each epoch's end, as OpenAI's jobs do.
"""

import json
from pathlib import Path
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from core.settings import Settings
from service.base_models import resolve_base
from service.crud import files as file_crud
from service.errors import ApiError
from service.fine_tuned_models import SUFFIX_KEY, base_model_of
from service.schemas.fine_tuning import (
    FineTuningJobCreate,
    SupervisedHyperparameters,
    SupervisedMethod,
    UnsupportedMethod,
)
from tuning.auto import auto_learning_rate
from tuning.spec import FORMATS_BY_TASK, JobRequest, JobSpec
from tuning.validation import chat_template

# deltatune's spec parts a create request may carry by their own names (the SDK's extra_body).
PARTS = (
    "task",
    "problem_type",
    "head",
    "layer_lr_decay",
    "gradual_unfreeze",
    "regularizers",
    "export",
    "data",
    "early_stopping",
    "checkpoints",
    "from_checkpoint",
)
# LoRA's layers by architecture (config.json's model_type), as PEFT's defaults name them; any other
# architecture gets deltatune's default, BERT's `query` and `value`.
LORA_TARGETS = {
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"],
    "distilbert": ["q_lin", "v_lin"],
}
# The chat template of a base model that has none (ChatML, as many chat models use it).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# OpenAI's hyperparameter → deltatune's, where a request must not give both.
SAME_AS = {"n_epochs": "epochs", "learning_rate_multiplier": "learning_rate"}


def job_request(session: Session, settings: Settings, owner_id: str, body: FineTuningJobCreate) -> JobRequest:
    """The JobRequest for `body`; 400 naming the field for what deltatune cannot do."""
    if body.integrations:
        raise _bad("integrations: deltatune has no integrations; send none", "integrations")
    spec: dict[str, Any] = {
        "base_model": base_model_of(body.model),
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "hyperparameters": _hyperparameters(body),  # learning_rate_multiplier: applied last
        "metadata": _metadata(body),
    }
    supervised = body.method is None or isinstance(body.method, SupervisedMethod)
    if body.method is not None and not supervised:
        spec["method"] = body.method.model_dump(mode="json", exclude_unset=True)
    for name in PARTS:
        if name in body.model_fields_set and (value := getattr(body, name)) is not None:
            spec[name] = (
                value if isinstance(value, str) else value.model_dump(mode="json", exclude_unset=True)
            )
    spec.setdefault("checkpoints", {})
    data_format = _data_format(session, owner_id, body.training_file)
    if "task" not in spec and data_format in FORMATS_BY_TASK["causal_lm"]:
        spec["task"] = "causal_lm"
    _, base_path = resolve_base(session, owner_id, _validated(spec).job_spec(), settings)
    if supervised:
        # OpenAI's supervised names no layers: LoRA on the attention projections of this architecture.
        targets = LORA_TARGETS.get(_model_type(base_path) or "")
        if targets is not None:
            spec["method"] = {"type": "lora", "target_modules": targets}
    data = spec.get("data", {})
    if data_format == "chat" and not data.get("chat_template") and chat_template(base_path) is None:
        # OpenAI's chat files train on any base model: one without a template of its own gets ChatML.
        spec["data"] = data | {"chat_template": CHATML}
    multiplier = _learning_rate_multiplier(body)
    if multiplier is not None:
        # Times the rate "auto" picks for the job's method and batch size, the job's default.
        rate, _ = auto_learning_rate(_validated(spec).job_spec())
        spec["hyperparameters"]["learning_rate"] = multiplier * rate
    return _validated(spec)


def learning_rate_multiplier(spec: JobSpec) -> float | Literal["auto"]:
    """The job's learning rate as OpenAI says it: "auto", or times what auto would pick."""
    rate = spec.hyperparameters.learning_rate
    return "auto" if rate == "auto" else rate / auto_learning_rate(spec)[0]


def _validated(spec: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(spec)
    except ValidationError as error:
        # Answered as a request body error would be: the handler names the field (dotted) at fault.
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors()], body=spec
        ) from None


def _model_type(base_path: Path) -> str | None:
    try:
        config = json.loads((base_path / "config.json").read_text())
    except (OSError, ValueError):
        return None  # the submission's own checks say what is wrong with the model
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None


def _hyperparameters(body: FineTuningJobCreate) -> dict[str, Any]:
    if isinstance(body.method, UnsupportedMethod):
        raise _bad(
            f"method.type: deltatune trains supervised jobs only, not {body.method.type!r}", "method.type"
        )
    openai: SupervisedHyperparameters | None = body.hyperparameters
    place = "hyperparameters"
    extra = dict(body.hyperparameters.model_extra or {}) if body.hyperparameters is not None else {}
    if isinstance(body.method, SupervisedMethod) and body.method.supervised is not None:
        inner = body.method.supervised.hyperparameters
        if inner is not None and openai is not None and _given(openai):
            raise _bad(
                "hyperparameters: give them in method.supervised.hyperparameters or at the top level, "
                "not both",
                "hyperparameters",
            )
        if inner is not None:
            openai, place = inner, "method.supervised.hyperparameters"
    values = dict(extra)
    if openai is not None:
        for name, deltatune_name in SAME_AS.items():
            if getattr(openai, name) not in (None, "auto") and deltatune_name in extra:
                raise _bad(f"{place}: give {name} or {deltatune_name}, not both", f"{place}.{name}")
        if isinstance(openai.n_epochs, int):
            values["epochs"] = openai.n_epochs
        if isinstance(openai.batch_size, int):
            values["batch_size"] = openai.batch_size
    if body.seed is not None:
        if "seed" in extra:
            raise _bad("seed: give it at the top level or in hyperparameters, not both", "seed")
        values["seed"] = body.seed
    return values


def _learning_rate_multiplier(body: FineTuningJobCreate) -> float | None:
    inner = None
    if isinstance(body.method, SupervisedMethod) and body.method.supervised is not None:
        inner = body.method.supervised.hyperparameters
    openai = inner if inner is not None else body.hyperparameters
    multiplier = openai.learning_rate_multiplier if openai is not None else None
    return float(multiplier) if isinstance(multiplier, float | int) else None


def _given(hyperparameters: SupervisedHyperparameters) -> bool:
    return any(getattr(hyperparameters, name) is not None for name in SupervisedHyperparameters.model_fields)


def _metadata(body: FineTuningJobCreate) -> dict[str, str]:
    metadata = dict(body.metadata or {})
    if body.suffix is not None:
        if SUFFIX_KEY in metadata and metadata[SUFFIX_KEY] != body.suffix:
            raise _bad(f"metadata.{SUFFIX_KEY}: it keeps the suffix; it differs from `suffix`", "metadata")
        metadata[SUFFIX_KEY] = body.suffix
    return metadata


def _data_format(session: Session, owner_id: str, file_id: str) -> str | None:
    """The training file's format (None for an unknown file: the submission names it)."""
    file = file_crud.get_file(session, owner_id=owner_id, file_id=file_id)
    return file.format if file is not None else None


def _bad(message: str, param: str) -> ApiError:
    return ApiError(message, param=param, code="invalid_request")
