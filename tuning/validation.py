"""The validating_files step: every file of a job read again with the job's own base-model tokenizer.

Runs in the API process before a job is queued, so it imports no torch or transformers: tokens are
counted with the `tokenizers` library from the base model's tokenizer.json (the same ids as
transformers' fast tokenizer, special tokens included by its post-processor). A base without
tokenizer.json gets no token statistics, and the report says so.

`validate_files` raises DataError (param = the file's field, with the first offending line) for a
file that cannot train the job, else returns the per-file report stored in the job's `validation`.

A text far longer than max_seq_length is tokenized only until it shows more than max_seq_length
tokens (tuning.data.prefix states the rule): one request's work per example is bounded whatever its
length, and the example is counted as over-long (`over_max_seq_length.counted_from_prefix`) with a
token count that is a lower bound; what training sees of it (max_seq_length tokens) stays exact.
"""

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning.batch_shapes import BatchShapes, evaluation_batches, training_batches
from tuning.data import (
    AnyExample,
    ChatExample,
    DataFile,
    Example,
    MultiLabelExample,
    PromptCompletionExample,
    RegressionExample,
    TextExample,
    build_label_map,
    check_validation_labels,
    read_data_file,
    regression_examples,
    sort_labels,
)
from tuning.data.causal_lm import Specials, encode_lm_examples, end_of_text_id, opening_id
from tuning.data.prefix import Prefix, count_prefixes, tokenize_prefix
from tuning.errors import DataError, SpecError
from tuning.parts.pooling import resolve_pooling
from tuning.spec import FORMAT_OF_PROBLEM, FORMATS_BY_TASK, JobSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class Length:
    """One example's tokens as training sees them before truncation, or of its prefix (`whole` false)."""

    tokens: int
    whole: bool = True
    estimate: int = 0  # the whole example's tokens extrapolated from its prefix (packing keeps them all)


CountTokens = Callable[[Sequence[AnyExample]], list[Length]]


@dataclass(frozen=True)
class Batching:
    """How the trainer cuts a file into batches: its batch size, and grouping or length-sorting."""

    batch_size: int
    group_by_length: bool = False
    evaluation: bool = False

    def shapes(self, lengths: Sequence[int]) -> BatchShapes:
        if self.evaluation:
            return evaluation_batches(lengths, self.batch_size)
        return training_batches(lengths, self.batch_size, group_by_length=self.group_by_length)


def validate_files(spec: JobSpec, base_path: Path, paths: Mapping[str, Path]) -> dict[str, Any]:
    """The report on each file of `paths` (keyed by its spec field: training_file, validation_file).

    DataError naming the field and the first offending line when a file cannot train the job.
    """
    if spec.task == "sequence_classification":
        resolve_pooling(spec.head.pooling, base_path)  # SpecError on head.pooling the model cannot do
    files = {param: read_data_file(path, param=param) for param, path in paths.items()}
    check_trainable(spec, base_path, files["training_file"], files.get("validation_file"))
    count, notes = token_counter(spec, base_path)
    return {
        "max_seq_length": spec.hyperparameters.max_seq_length,
        "token_statistics": count is not None,
        "notes": notes,
        "files": {
            param: file_report(
                param,
                _file_id(spec, param),
                data,
                count,
                spec.hyperparameters.max_seq_length,
                packing=spec.data.packing,
                batches=_batching(spec, param),
            )
            for param, data in files.items()
        },
    }


def _batching(spec: JobSpec, param: str) -> Batching:
    """How the trainer batches the file of `param`: training grouped by length or shuffled, every
    evaluation length-sorted (tuning.batching)."""
    hp = spec.hyperparameters
    if param != "training_file":
        return Batching(hp.batch_size, evaluation=True)
    grouped = hp.group_by_length if hp.group_by_length is not None else spec.task != "causal_lm"
    return Batching(hp.batch_size, group_by_length=grouped)


def check_trainable(spec: JobSpec, base_path: Path, training: DataFile, validation: DataFile | None) -> None:
    """Every rule that makes a file unable to train the job, each a DataError with its field and line."""
    _check_format(spec, training)
    if spec.problem_type == "regression":
        # Integer class labels read as numbers: the same conversion the regression task trains on.
        regression_examples(training, "training_file")
        if validation is not None:
            regression_examples(validation, "validation_file")
    elif validation is not None and validation.format != training.format:
        raise DataError(
            f"the validation file is {validation.format} but the training file is {training.format}; "
            "both must hold the same format",
            line=_first_line(validation),
            param="validation_file",
        )
    if training.format in ("classification", "multi_label") and spec.problem_type != "regression":
        labels = build_label_map(training.examples, param="training_file")  # type: ignore[arg-type]
        if validation is not None:
            check_validation_labels(validation.examples, labels)  # type: ignore[arg-type]
    if training.format == "chat" and spec.data.chat_template is None and chat_template(base_path) is None:
        raise DataError(
            f"chat data needs a chat template, and base model {spec.base_model!r} has none "
            "(no 'chat_template' in tokenizer_config.json): give data.chat_template",
            line=_first_line(training),
            param="training_file",
        )
    for param, data in (("training_file", training), ("validation_file", validation)):
        if (
            data is not None
            and data.format == "prompt_completion"
            and _empty_completions(data) == len(data.examples)
        ):
            raise DataError(
                "every completion is empty: the loss is on completion tokens, so nothing would be learned",
                line=_first_line(data),
                param=param,
            )


def _check_format(spec: JobSpec, training: DataFile) -> None:
    allowed = FORMATS_BY_TASK[spec.task]
    line = _first_line(training)
    if training.format not in allowed:
        raise DataError(
            f"task {spec.task} reads {', '.join(allowed)} lines; the training file is {training.format}",
            line=line,
            param="training_file",
        )
    if spec.problem_type is None:
        return
    expected = FORMAT_OF_PROBLEM[spec.problem_type]
    # Integer class labels can also be read as regression targets (ratings 1–5, say).
    if training.format != expected and (spec.problem_type, training.format) != (
        "regression",
        "classification",
    ):
        raise DataError(
            f"problem_type {spec.problem_type} reads {expected} lines; "
            f"the training file is {training.format}",
            line=line,
            param="training_file",
        )


def chat_template(base_path: Path) -> str | None:
    """The base model's own chat template: tokenizer_config.json's, or a chat_template.jinja file."""
    template_file = base_path / "chat_template.jinja"
    if template_file.is_file():
        return template_file.read_text()
    template = _tokenizer_config(base_path).get("chat_template")
    if isinstance(template, list):  # several named templates: transformers uses "default"
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def token_counter(spec: JobSpec, base_path: Path) -> tuple[CountTokens | None, list[str]]:
    """A function counting each example's tokens as training sees them (before truncation), and notes."""
    tokenizer_file = base_path / "tokenizer.json"
    if not tokenizer_file.is_file():
        return None, [f"base model {spec.base_model!r} has no tokenizer.json: token statistics skipped"]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    # A saved tokenizer.json may pad and truncate (MiniLM's pads to 128): the raw lengths are wanted.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    max_length = spec.hyperparameters.max_seq_length
    if spec.task == "causal_lm":
        return _lm_counter(spec, base_path, tokenizer), []

    def encode_batch(texts: list[str]) -> list[int]:
        # encode_batch runs in parallel in Rust: a 100 MB upload is counted in seconds, not minutes.
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]

    def count(examples: Sequence[AnyExample]) -> list[Length]:
        texts = [getattr(example, "text", "") for example in examples]
        prefixes = count_prefixes(encode_batch, texts, max_length)
        return [_length(prefix, len(text)) for prefix, text in zip(prefixes, texts, strict=True)]

    return count, []


def _length(prefix: Prefix, text_chars: int) -> Length:
    return Length(prefix.tokens, prefix.whole, prefix.estimated_tokens(text_chars))


def _lm_counter(spec: JobSpec, base_path: Path, tokenizer: "Tokenizer") -> CountTokens:
    """Counts as the trainer encodes (tuning.data.causal_lm): EOS closes texts, templates render chats."""
    from jinja2.exceptions import TemplateError

    specials = lm_specials(base_path, tokenizer)
    template = spec.data.chat_template or chat_template(base_path)
    max_length = spec.hyperparameters.max_seq_length

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def count_one(example: TextExample | PromptCompletionExample | ChatExample) -> Length:
        prefixes: list[tuple[Prefix, int]] = []

        def tokenize(text: str) -> tuple[list[int], list[tuple[int, int]]]:
            found, prefix = tokenize_prefix(encode, lambda pair: len(pair[0]), text, max_length)
            prefixes.append((prefix, len(text)))
            return found

        try:
            # One example at a time, untruncated beyond the prefix rule, so a failure names its line.
            (sequence,) = encode_lm_examples(
                tokenize, [example], max_length=2**62, specials=specials, chat_template=template
            )
        except SpecError as error:
            # A template refusing one conversation is that line's problem: say which line.
            raise DataError(error.message, line=example.line) from None
        except TemplateError as error:
            raise DataError(f"the chat template fails on this chat: {error}", line=example.line) from None
        tokens = len(sequence.input_ids)
        unseen = sum(prefix.estimated_tokens(chars) - prefix.tokens for prefix, chars in prefixes)
        return Length(tokens, all(prefix.whole for prefix, _ in prefixes), tokens + unseen)

    # check_trainable let only language-model formats through.
    lm_formats = (TextExample, PromptCompletionExample, ChatExample)
    return lambda examples: [count_one(e) for e in examples if isinstance(e, lm_formats)]


def lm_specials(base_path: Path, tokenizer: "Tokenizer") -> Specials:
    """EOS and BOS as tuning.tasks.causal_lm picks them, read from tokenizer_config.json and config.json."""
    config = _tokenizer_config(base_path)
    model_config = _json(base_path / "config.json")

    def token_id(name: str) -> int | None:
        token = _token_text(config.get(name))
        return tokenizer.token_to_id(token) if token else None

    eos_id = end_of_text_id((token_id("eos_token"), model_config.get("eos_token_id"), token_id("sep_token")))
    if eos_id is None:
        raise SpecError("the model's tokenizer and config name no end-of-text token", param="base_model")
    return Specials(
        eos_id=eos_id,
        bos_id=opening_id(token_id("bos_token"), eos_id),
        eos_token=_token_text(config.get("eos_token")) or tokenizer.id_to_token(eos_id) or "",
        bos_token=_token_text(config.get("bos_token")),
    )


def _token_text(value: Any) -> str:
    # tokenizer_config.json writes a special token as a string or as {"content": ..., ...}.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _tokenizer_config(base_path: Path) -> dict[str, Any]:
    return _json(base_path / "tokenizer_config.json")


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    content = json.loads(path.read_text())
    return content if isinstance(content, dict) else {}


def file_report(
    param: str,
    file_id: str | None,
    data: DataFile,
    count: CountTokens | None,
    max_length: int,
    *,
    packing: bool = False,
    batches: Batching | None = None,
) -> dict[str, Any]:
    """What one file holds: size, tokens, truncation, the shapes of its batches (given `batches`,
    without packing), and the statistics of its format."""
    report: dict[str, Any] = {
        "id": file_id,
        "format": data.format,
        "examples": len(data.examples),
        "duplicates": _duplicates(data.examples),
    }
    if count is not None:
        lengths = _lengths(count, data.examples, param)
        report.update(_token_report(lengths, max_length, packing=packing))
        if batches is not None and not packing:
            trained = [min(length.tokens if length.whole else max_length, max_length) for length in lengths]
            report["batches"] = batches.shapes(trained).as_json()
    if data.format in ("classification", "multi_label"):
        report["labels"] = _label_counts(data.examples)
    elif data.format == "regression":
        values = [e.value for e in data.examples if isinstance(e, RegressionExample)]
        report["values"] = _summary(values)
    elif data.format == "chat":
        roles = Counter(m.role for e in data.examples if isinstance(e, ChatExample) for m in e.messages)
        report["roles"] = dict(sorted(roles.items()))
    elif data.format == "prompt_completion":
        report["empty_completions"] = _empty_completions(data)
    return report


def _lengths(count: CountTokens, examples: Sequence[AnyExample], param: str) -> list[Length]:
    try:
        return count(examples)
    except DataError as error:
        raise DataError(error.reason, line=error.line, param=param) from None


def _token_report(counted: Sequence[Length], max_length: int, *, packing: bool) -> dict[str, Any]:
    partial = sum(1 for length in counted if not length.whole)
    if packing:
        # Packed examples are joined end to end and cut every max_length tokens: none is lost, so a
        # prefix's count is extrapolated to the whole text (an estimate, said by counted_from_prefix).
        lengths = [length.tokens if length.whole else length.estimate for length in counted]
        total = sum(lengths)
        over = {
            "count": _over(lengths, max_length),
            "action": f"split across packed {max_length}-token sequences",
        }
        return {
            "tokens": _summary(lengths),
            "trained_tokens": total,
            "packed_sequences": math.ceil(total / max_length),
            "over_max_seq_length": over | ({"counted_from_prefix": partial} if partial else {}),
        }
    # A prefix that did not reach max_length tokens (tokens of hundreds of characters) still counts as
    # over-long: the text is longer than the prefix, and training cuts it at max_length either way.
    lengths = [length.tokens if length.whole else max(length.tokens, max_length + 1) for length in counted]
    over = {"count": _over(lengths, max_length), "action": f"truncated to {max_length} tokens"}
    return {
        "tokens": _summary(lengths),
        # What training sees per epoch: every example cut to max_seq_length.
        "trained_tokens": sum(min(n, max_length) for n in lengths),
        "over_max_seq_length": over | ({"counted_from_prefix": partial} if partial else {}),
    }


def _over(lengths: Sequence[int], max_length: int) -> int:
    return sum(1 for n in lengths if n > max_length)


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "mean": round(sum(values) / len(values), 4), "max": max(values)}


def _label_counts(examples: Sequence[AnyExample]) -> dict[str, int]:
    counts: Counter[str | int] = Counter()
    for example in examples:
        if isinstance(example, Example):
            counts[example.label] += 1
        elif isinstance(example, MultiLabelExample):
            counts.update(example.labels)
    return {str(label): counts[label] for label in sort_labels(counts)}


def _duplicates(examples: Sequence[AnyExample]) -> int:
    """Examples identical to an earlier one (the line number aside)."""
    seen = Counter(astuple(example)[:-1] for example in examples)
    return sum(n - 1 for n in seen.values())


def _empty_completions(data: DataFile) -> int:
    return sum(
        1 for e in data.examples if isinstance(e, PromptCompletionExample) and not e.completion.strip()
    )


def _first_line(data: DataFile) -> int:
    return data.examples[0].line


def _file_id(spec: JobSpec, param: str) -> str | None:
    value = getattr(spec, param, None)
    return value if isinstance(value, str) else None
