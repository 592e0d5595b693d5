"""The validating_files report, counted with the base model's own tokenizer, and the checks that refuse
a file that cannot train the job (each naming the file's field and the first offending line)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tuning.data.prefix import max_chars
from tuning.errors import DataError
from tuning.spec import JobSpec
from tuning.validation import validate_files

# Renders "user: hi\nassistant: hello\n"; the uncased WordPiece vocabulary makes it 6 tokens
# (user : hi assistant : hello), no special tokens: the template writes its own.
ROLE_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def spec_for(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"base_model": "tiny-bert", "training_file": "file-train"} | fields)


def refusal(spec: JobSpec, base: Path, paths: dict[str, Path]) -> DataError:
    with pytest.raises(DataError) as raised:
        validate_files(spec, base, paths)
    return raised.value


def test_classification_report_counted_by_hand(tmp_path: Path, tiny_bert_dir: Path) -> None:
    # Each word is one WordPiece of the uncased vocabulary; [CLS] and [SEP] add 2 to every line.
    training = write(
        tmp_path / "train.jsonl",
        [
            {"text": "good movie", "label": "pos"},  # 4 tokens
            {"text": "bad film", "label": "neg"},  # 4
            {"text": "bad film", "label": "neg"},  # 4, a duplicate of line 2
            {"text": " ".join(["good"] * 9), "label": "pos"},  # 11, over max_seq_length 8
        ],
    )
    spec = spec_for(hyperparameters={"max_seq_length": 8})
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    assert report["token_statistics"] is True
    assert report["files"]["training_file"] == {
        "id": "file-train",
        "format": "classification",
        "examples": 4,
        "duplicates": 1,
        "tokens": {"min": 4, "mean": 5.75, "max": 11},
        "trained_tokens": 4 + 4 + 4 + 8,
        "over_max_seq_length": {"count": 1, "action": "truncated to 8 tokens"},
        # One batch of 16 or fewer: all four padded to the longest, 8 tokens.
        "batches": {
            "count": 1,
            "padded_tokens": 4 * 8,
            "token_pairs": 4 * 8 * 8,
            "largest_tokens": 32,
            "largest_pairs": 256,
        },
        "labels": {"neg": 2, "pos": 2},
    }


def test_regression_and_multi_label_statistics(tmp_path: Path, tiny_bert_dir: Path) -> None:
    values = write(tmp_path / "r.jsonl", [{"text": "good", "label": 0.5}, {"text": "bad", "label": 2.0}])
    report = validate_files(spec_for(), tiny_bert_dir, {"training_file": values})
    assert report["files"]["training_file"]["values"] == {"min": 0.5, "mean": 1.25, "max": 2.0}
    tags = write(tmp_path / "m.jsonl", [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}])
    report = validate_files(spec_for(), tiny_bert_dir, {"training_file": tags})
    assert report["files"]["training_file"]["labels"] == {"x": 1, "y": 2}


def test_chat_rendered_with_the_spec_template(tmp_path: Path, tiny_bert_dir: Path) -> None:
    chats = write(tmp_path / "chat.jsonl", [CHAT, CHAT])
    spec = spec_for(task="causal_lm", data={"chat_template": ROLE_TEMPLATE})
    file = validate_files(spec, tiny_bert_dir, {"training_file": chats})["files"]["training_file"]
    assert file["roles"] == {"assistant": 2, "user": 2}
    assert file["tokens"] == {"min": 6, "mean": 6.0, "max": 6}
    assert file["duplicates"] == 1


def test_chat_without_any_template_is_refused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    chats = write(tmp_path / "chat.jsonl", [CHAT])
    error = refusal(spec_for(task="causal_lm"), tiny_bert_dir, {"training_file": chats})
    assert (error.param, error.line) == ("training_file", 1)
    assert "chat template" in error.message


@pytest.mark.parametrize("where", ["tokenizer_config", "jinja_file"])
def test_the_base_models_own_chat_template_is_used(tmp_path: Path, tiny_bert_dir: Path, where: str) -> None:
    base = Path(shutil.copytree(tiny_bert_dir, tmp_path / "chat-model"))
    if where == "jinja_file":
        (base / "chat_template.jinja").write_text(ROLE_TEMPLATE)
    else:
        config = json.loads((base / "tokenizer_config.json").read_text())
        (base / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": ROLE_TEMPLATE}))
    chats = write(tmp_path / "chat.jsonl", [CHAT])
    report = validate_files(spec_for(task="causal_lm"), base, {"training_file": chats})
    assert report["files"]["training_file"]["tokens"]["max"] == 6


def test_prompt_completion_counts_empty_completions(tmp_path: Path, tiny_bert_dir: Path) -> None:
    pairs = write(
        tmp_path / "pc.jsonl",
        [{"prompt": "good", "completion": " movie"}, {"prompt": "bad", "completion": ""}],
    )
    file = validate_files(spec_for(task="causal_lm"), tiny_bert_dir, {"training_file": pairs})["files"]
    # As the trainer encodes them (tuning.data.causal_lm): "good movie" + EOS = 3, "bad" + EOS = 2.
    assert file["training_file"]["tokens"] == {"min": 2, "mean": 2.5, "max": 3}
    assert file["training_file"]["empty_completions"] == 1
    empty = write(tmp_path / "empty.jsonl", [{"prompt": "good", "completion": ""}])
    error = refusal(spec_for(task="causal_lm"), tiny_bert_dir, {"training_file": empty})
    assert (error.param, error.line) == ("training_file", 1) and "every completion is empty" in error.message


def test_a_base_without_tokenizer_json_skips_token_statistics(tmp_path: Path, tiny_bert_dir: Path) -> None:
    base = tmp_path / "no-tokenizer"
    base.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", base / "config.json")
    training = write(
        tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    )
    report = validate_files(spec_for(), base, {"training_file": training})
    assert report["token_statistics"] is False
    assert "no tokenizer.json" in report["notes"][0]
    assert "tokens" not in report["files"]["training_file"]
    assert report["files"]["training_file"]["examples"] == 2


@pytest.mark.parametrize(
    ("task", "records", "expected"),
    [
        ("causal_lm", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], "task causal_lm reads"),
        ("sequence_classification", [CHAT], "task sequence_classification reads"),
        ("sequence_classification", [{"text": "a", "label": "x"}], "at least 2 distinct labels"),
    ],
)
def test_training_files_that_cannot_train_the_task(
    tmp_path: Path, tiny_bert_dir: Path, task: str, records: list[dict[str, Any]], expected: str
) -> None:
    training = write(tmp_path / "t.jsonl", records)
    error = refusal(spec_for(task=task), tiny_bert_dir, {"training_file": training})
    assert error.param == "training_file"
    assert expected in error.message


def test_problem_type_must_fit_the_file(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    error = refusal(spec_for(problem_type="multi_label"), tiny_bert_dir, {"training_file": training})
    assert (error.param, error.line) == ("training_file", 1) and "problem_type multi_label" in error.message


def test_validation_label_never_seen_in_training(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    validation = write(tmp_path / "v.jsonl", [{"text": "a", "label": "x"}, {"text": "c", "label": "z"}])
    paths = {"training_file": training, "validation_file": validation}
    error = refusal(spec_for(validation_file="file-val"), tiny_bert_dir, paths)
    assert (error.param, error.line) == ("validation_file", 2)
    assert "'z' never appears in the training file" in error.message


def test_validation_format_must_match_training(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    validation = write(tmp_path / "v.jsonl", [{"text": "a", "labels": ["x"]}])
    paths = {"training_file": training, "validation_file": validation}
    error = refusal(spec_for(validation_file="file-val"), tiny_bert_dir, paths)
    assert (error.param, error.line) == ("validation_file", 1) and "same format" in error.message


def test_a_template_that_fails_names_the_chat(tmp_path: Path, tiny_bert_dir: Path) -> None:
    # Like many models' templates: refuse a system turn.
    template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}"
    template += "{% endif %}{{ m.content }} {% endfor %}"
    system_chat = {"messages": [{"role": "system", "content": "be kind"}, *CHAT["messages"]]}
    training = write(tmp_path / "t.jsonl", [CHAT, CHAT])
    validation = write(tmp_path / "v.jsonl", [CHAT, system_chat])
    spec = spec_for(task="causal_lm", validation_file="file-val", data={"chat_template": template})
    error = refusal(spec, tiny_bert_dir, {"training_file": training, "validation_file": validation})
    assert (error.param, error.line) == ("validation_file", 2)
    assert "the chat template refused the conversation: no system role" in error.message


@pytest.mark.parametrize("packing", [False, True])
def test_language_model_counts_match_the_trainers_encoding(
    tmp_path: Path, tiny_gpt2_dir: Path, packing: bool
) -> None:
    from tuning.data import read_data_file
    from tuning.tasks import task_named

    records = [{"prompt": f"question {i} is", "completion": " the answer " * (i % 4)} for i in range(9)]
    records[0]["completion"] = " yes"
    training = write(tmp_path / "pc.jsonl", records)
    spec = spec_for(
        base_model="tiny-gpt2",
        task="causal_lm",
        method={"type": "lora", "r": 4, "alpha": 8, "target_modules": ["c_attn"]},
        data={"packing": packing},
        hyperparameters={"max_seq_length": 8 if packing else 64},
    )
    report = validate_files(spec, tiny_gpt2_dir, {"training_file": training})["files"]["training_file"]
    task = task_named("causal_lm")
    examples = read_data_file(training).examples
    encoded = task.encode(task.load(spec, tiny_gpt2_dir, []), spec, examples, [])
    if packing:
        assert report["packed_sequences"] == len(encoded)
        assert report["trained_tokens"] == sum(len(ids) for ids in encoded.input_ids)
    else:
        lengths = [len(ids) for ids in encoded.input_ids]
        assert report["tokens"] == {
            "min": min(lengths),
            "mean": round(sum(lengths) / 9, 4),
            "max": max(lengths),
        }
        assert report["trained_tokens"] == sum(lengths)


class CountingTokenizer:
    """The real `tokenizers.Tokenizer`, recording how many characters each text handed to it had."""

    real: Any = None
    handed: list[int] = []

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @classmethod
    def from_file(cls, path: str) -> "CountingTokenizer":
        return cls(cls.real.from_file(path))

    def encode(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.handed.append(len(text))
        return self.inner.encode(text, *args, **kwargs)

    def encode_batch(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.handed.extend(len(text) for text in texts)
        return self.inner.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


WORDS = "the quick brown fox jumps over a lazy dog while it rains "  # 12 WordPieces
REPEATS = 20_000  # about 1.1 MB, 240,000 tokens
MAX_LENGTH = 32


@pytest.fixture
def handed_to_tokenizer(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The characters of every text tuning.validation hands its tokenizer, from now on."""
    import tokenizers

    monkeypatch.setattr(CountingTokenizer, "real", tokenizers.Tokenizer)
    monkeypatch.setattr(CountingTokenizer, "handed", [])
    monkeypatch.setattr(tokenizers, "Tokenizer", CountingTokenizer)
    return CountingTokenizer.handed


LONG_CHAT = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": WORDS * REPEATS}]
}


LONG_EXAMPLES = {
    "classification": (
        "sequence_classification",
        {"text": WORDS * REPEATS, "label": "pos"},
        [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}],
    ),
    "text": ("causal_lm", {"text": WORDS * REPEATS}, [{"text": "good film"}, {"text": "bad film"}]),
    "prompt_completion": (
        "causal_lm",
        {"prompt": "say it:", "completion": WORDS * REPEATS},
        [{"prompt": "good", "completion": " film"}, {"prompt": "bad", "completion": " film"}],
    ),
    "chat": ("causal_lm", LONG_CHAT, [CHAT, CHAT]),
}


@pytest.mark.parametrize(
    ("kind", "packing"),
    [(kind, False) for kind in LONG_EXAMPLES]
    + [(kind, True) for kind in LONG_EXAMPLES if kind != "classification"],
)
def test_an_example_far_beyond_max_seq_length_hands_the_tokenizer_a_bounded_prefix(
    tmp_path: Path,
    tiny_bert_dir: Path,
    handed_to_tokenizer: list[int],
    kind: str,
    packing: bool,
) -> None:
    task, long_record, short_records = LONG_EXAMPLES[kind]
    fields: dict[str, Any] = {"task": task, "hyperparameters": {"max_seq_length": MAX_LENGTH}}
    if task == "causal_lm":
        fields["data"] = {"packing": packing, "chat_template": ROLE_TEMPLATE}
    spec = spec_for(**fields)
    short = validate_files(spec, tiny_bert_dir, {"training_file": write(tmp_path / "s.jsonl", short_records)})
    short_file = short["files"]["training_file"]
    handed_to_tokenizer.clear()

    training = write(tmp_path / "t.jsonl", [long_record, *short_records])
    file = validate_files(spec, tiny_bert_dir, {"training_file": training})["files"]["training_file"]

    # No text handed over is longer than the prefix rule allows (336 × 40 characters here, not 1.1 MB),
    # and the long example's windows together stay within it.
    assert max(handed_to_tokenizer) <= max_chars(MAX_LENGTH), handed_to_tokenizer
    assert sum(handed_to_tokenizer) <= max_chars(MAX_LENGTH) + 200 * len(short_records)
    assert file["over_max_seq_length"]["count"] == 1
    assert file["over_max_seq_length"]["counted_from_prefix"] == 1
    if packing:
        # Every token trains when packed: the long one's count is extrapolated, within 5 % of the truth.
        long_tokens = file["trained_tokens"] - short_file["trained_tokens"]
        assert abs(long_tokens - 12 * REPEATS) / (12 * REPEATS) < 0.05, file
    else:
        # What training sees stays exact: the long one cut at max_seq_length, the short ones whole.
        assert file["trained_tokens"] == MAX_LENGTH + short_file["trained_tokens"]
        assert file["tokens"]["max"] > MAX_LENGTH and file["tokens"]["min"] == short_file["tokens"]["min"]


def test_a_text_of_one_enormous_word_is_counted_as_over_long_without_tokenizing_it(
    tmp_path: Path, tiny_bert_dir: Path, handed_to_tokenizer: list[int]
) -> None:
    # No whitespace at all: WordPiece makes it one [UNK], so no window ever shows 32 tokens.
    training = write(
        tmp_path / "t.jsonl", [{"text": "x" * 500_000, "label": "a"}, {"text": "b", "label": "b"}]
    )
    spec = spec_for(hyperparameters={"max_seq_length": MAX_LENGTH})
    file = validate_files(spec, tiny_bert_dir, {"training_file": training})["files"]["training_file"]
    assert file["over_max_seq_length"] == {
        "count": 1,
        "action": f"truncated to {MAX_LENGTH} tokens",
        "counted_from_prefix": 1,
    }
    assert file["trained_tokens"] == MAX_LENGTH + 3  # "b" is [CLS] b [SEP]
    assert max(handed_to_tokenizer) <= max_chars(MAX_LENGTH)
    assert sum(handed_to_tokenizer) <= max_chars(MAX_LENGTH) + 10
