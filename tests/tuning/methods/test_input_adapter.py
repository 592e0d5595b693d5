"""The input adapter: an identity-at-init encoder on the embeddings, and new tokens whose rows alone train."""

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoTokenizer

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tests.tuning.methods.helpers import model_logits
from tuning import JobSpec, load_artifact, predict_logits
from tuning.artifacts import TOKENIZER_DIR, write_artifact
from tuning.build import apply_spec_method
from tuning.errors import SpecError
from tuning.fit import fit
from tuning.methods.apply import Applied, trainable_names
from tuning.methods.input_adapter.model import DomainEmbedding
from tuning.task_model import TaskModel, load_classifier

MakeSpec = Callable[..., JobSpec]
# WordPiece splits both into pieces: "zorblax" → z ##or ##bla ##x, "grimtok" → several.
DOMAIN = {"positive": "zorblax", "negative": "grimtok"}
TEXTS = ["a zorblax movie", "grimtok and boring", "zorblax grimtok zorblax", "ok"]


def load(model_dir: Path) -> TaskModel:
    torch.manual_seed(0)
    return load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)


def apply_input_adapter(classifier: TaskModel, **options: object) -> Applied:
    spec = JobSpec.model_validate(
        {"base_model": "m", "training_file": "f", "method": {"type": "input_adapter", **options}}
    )
    return apply_spec_method(spec, classifier).applied


def embedding(model: nn.Module) -> DomainEmbedding:
    wrapped = model.get_input_embeddings()  # type: ignore[operator]
    assert isinstance(wrapped, DomainEmbedding)
    return wrapped


def logits(classifier: TaskModel, texts: list[str]) -> torch.Tensor:
    return model_logits(classifier.model, classifier.tokenizer, texts)


def test_new_ids_read_the_new_table_and_old_ids_the_frozen_one() -> None:
    torch.manual_seed(0)
    base = torch.nn.Embedding(10, 4).requires_grad_(False)
    rows = torch.randn(2, 4)
    wrapped = DomainEmbedding(base, first_new_id=10, new_rows=rows, bottleneck=2, activation="relu")
    ids = torch.tensor([[3, 10, 11, 0]])
    looked_up = wrapped.lookup(ids)
    assert torch.equal(looked_up[0, 0], base.weight[3]) and torch.equal(looked_up[0, 3], base.weight[0])
    assert torch.equal(looked_up[0, 1], rows[0]) and torch.equal(looked_up[0, 2], rows[1])
    assert torch.equal(wrapped(ids), looked_up)  # the encoder is the identity at init

    wrapped(torch.tensor([[10, 3]])).sum().backward()
    assert wrapped.new_embeddings is not None and wrapped.new_embeddings.grad is not None
    assert wrapped.new_embeddings.grad[0].abs().sum() > 0 and not wrapped.new_embeddings.grad[1].any()
    with pytest.raises(IndexError):
        wrapped(torch.tensor([[12]]))


@pytest.mark.parametrize("new_tokens", [[], list(DOMAIN.values())])
def test_output_equals_the_base_at_init(model_dir: Path, new_tokens: list[str]) -> None:
    classifier = load(model_dir)
    texts = ["a wonderful movie", "the plot was awful and boring", "ok"]
    before = logits(classifier, texts)
    apply_input_adapter(classifier, non_linearity="gelu", new_tokens=new_tokens)
    assert torch.equal(logits(classifier, texts), before)


def test_only_the_encoder_new_rows_and_head_require_grad(model_dir: Path) -> None:
    classifier = load(model_dir)
    applied = apply_input_adapter(classifier, reduction_factor=4, new_tokens=list(DOMAIN.values()))
    name = applied.details["embedding_module"]
    head = {n for n, _ in classifier.model.named_parameters() if n.split(".")[0] in classifier.head_modules}
    encoder = {f"{name}.encoder.{part}.{kind}" for part in ("down", "up") for kind in ("weight", "bias")}
    assert set(trainable_names(classifier.model)) == encoder | {f"{name}.new_embeddings"} | head
    wrapped = embedding(classifier.model)
    assert wrapped.encoder.down.out_features == 32 // 4
    assert wrapped.new_embeddings is not None and wrapped.new_embeddings.shape == (2, 32)


def test_new_tokens_get_single_ids_and_start_at_their_pieces_mean(tiny_bert_dir: Path) -> None:
    classifier = load(tiny_bert_dir)
    tokenizer = classifier.tokenizer
    table = classifier.model.get_input_embeddings().weight.detach().clone()  # type: ignore[operator]
    pieces = {token: tokenizer(token, add_special_tokens=False)["input_ids"] for token in DOMAIN.values()}
    assert all(len(ids) > 1 for ids in pieces.values())
    vocabulary = len(tokenizer)

    applied = apply_input_adapter(classifier, new_tokens=["zorblax", "movie", "Movie", "grimtok"])
    assert applied.details["skipped_tokens"] == ["movie", "Movie"]  # already one id of the vocabulary
    assert applied.details["new_tokens"] == {"zorblax": vocabulary, "grimtok": vocabulary + 1}
    assert len(tokenizer) == vocabulary + 2 and classifier.model.config.vocab_size == vocabulary + 2
    ids = tokenizer("a zorblax grimtok movie", add_special_tokens=False)["input_ids"]
    assert ids[1:3] == [vocabulary, vocabulary + 1]
    rows = embedding(classifier.model).new_embeddings
    assert rows is not None
    for index, token in enumerate(["zorblax", "grimtok"]):
        torch.testing.assert_close(rows[index].detach(), table[pieces[token]].mean(dim=0))


def test_tokens_that_shadow_each_other_are_refused(tiny_bert_dir: Path) -> None:
    # The lowercasing tokenizer reads "Zorblax" and "zorblax" the same way: one id would never occur.
    with pytest.raises(SpecError) as caught:
        apply_input_adapter(load(tiny_bert_dir), new_tokens=["Zorblax", "zorblax"])
    assert caught.value.param == "method.new_tokens"


def domain_lines(count: int, seed: int) -> list[str]:
    """The sentiment data with each example's label also carried by a domain token."""
    rng = random.Random(seed)
    lines = []
    for line in sentiment_lines(count, seed=seed):
        example = json.loads(line)
        words = example["text"].split() + [DOMAIN[example["label"]]]
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": example["label"]}))
    return lines


@pytest.mark.parametrize("base_model", ["tiny-bert", "tiny-gpt2"])
def test_training_moves_only_new_rows_encoder_and_head_and_the_artifact_reloads(
    tiny_spec: MakeSpec, tiny_gpt2_dir: Path, model_dirs: list[Path], tmp_path: Path, base_model: str
) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", domain_lines(64, seed=1))
    validation = write_jsonl(tmp_path / "validation.jsonl", domain_lines(32, seed=2))
    method = {"type": "input_adapter", "new_tokens": list(DOMAIN.values())}
    spec = JobSpec.model_validate(tiny_spec(method).model_dump() | {"base_model": base_model})
    fitted = fit(spec, training_path=training, validation_path=validation, model_dirs=model_dirs)
    job = fitted.job
    wrapped = embedding(job.model)

    # The whole pretrained embedding table, and every other pretrained tensor, is bit-identical.
    pretrained = load(model_dirs[0] / base_model).model.state_dict()
    trained = {name.replace(".base_layer.", "."): value for name, value in job.model.state_dict().items()}
    assert job.pretrained and all(torch.equal(trained[name], pretrained[name]) for name in job.pretrained)
    # Each new row did train, away from its pieces' mean.
    start = load(model_dirs[0] / base_model)
    apply_input_adapter(start, new_tokens=list(DOMAIN.values()))
    rows, initial = wrapped.new_embeddings, embedding(start.model).new_embeddings
    assert rows is not None and initial is not None
    assert all(not torch.equal(rows[index], initial[index]) for index in range(len(DOMAIN)))
    assert wrapped.encoder.up.weight.abs().sum() > 0
    assert job.metrics["val_loss"] < job.metrics["initial_val_loss"]

    out_dir = tmp_path / "artifact"
    files = write_artifact(out_dir, job)
    assert (
        "tokenizer/tokenizer_config.json" in files and (out_dir / TOKENIZER_DIR / "tokenizer.json").is_file()
    )
    with safe_open(str(out_dir / "delta.safetensors"), framework="pt") as stored:
        assert set(stored.keys()) == set(trainable_names(job.model))  # the rows, not the whole table
        assert stored.get_slice(f"{job.applied.details['embedding_module']}.new_embeddings").get_shape() == [
            2,
            32,
        ]
    loaded = load_artifact(out_dir, model_dirs, device=torch.device("cpu"))
    # The loader re-added the tokens to a fresh base tokenizer: same ids as the one the job saved.
    saved = AutoTokenizer.from_pretrained(out_dir / TOKENIZER_DIR)
    for text in TEXTS:
        assert (
            loaded.tokenizer(text)["input_ids"]
            == saved(text)["input_ids"]
            == job.tokenizer(text)["input_ids"]
        )
    torch.testing.assert_close(
        predict_logits(loaded, TEXTS), model_logits(job.model, job.tokenizer, TEXTS), atol=1e-5, rtol=0
    )
