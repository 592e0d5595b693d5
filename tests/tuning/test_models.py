import json
from pathlib import Path

import pytest

from tuning.errors import ModelNotFound
from tuning.models import BUNDLED_MODEL_ID, list_base_models, resolve_base_model


def fake_hf_cache(root: Path) -> Path:
    """A hub cache holding `acme/tiny-roberta` at revision abc (config only: listing never loads)."""
    repo = root / "models--acme--tiny-roberta"
    snapshot = repo / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    return root


def test_lists_bundled_directory_and_cached_models(
    tiny_bert_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-models"
    (other / "not-a-model").mkdir(parents=True)  # no config.json: not listed
    models = list_base_models([tiny_bert_dir.parent, other], hf_cache=fake_hf_cache(tmp_path / "hub"))
    by_id = {info.id: info for info in models}

    assert set(by_id) == {BUNDLED_MODEL_ID, "tiny-bert", "tiny-gpt2", "acme/tiny-roberta"}
    assert (by_id[BUNDLED_MODEL_ID].source, by_id[BUNDLED_MODEL_ID].architecture) == ("bundled", "BertModel")
    assert (by_id["tiny-bert"].source, by_id["tiny-bert"].path) == ("directory", tiny_bert_dir)
    cached = by_id["acme/tiny-roberta"]
    assert (cached.source, cached.architecture, cached.path.name) == ("hf_cache", "roberta", "abc")


def test_resolve_finds_a_directory_model(tiny_bert_dir: Path, tmp_path: Path) -> None:
    assert resolve_base_model("tiny-bert", [tiny_bert_dir.parent], hf_cache=tmp_path) == tiny_bert_dir
    bundled = resolve_base_model(BUNDLED_MODEL_ID, [], hf_cache=tmp_path)
    assert (bundled / "config.json").is_file()


def test_unknown_model_lists_the_known_ones(tiny_bert_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_base_model("bert-huge", [tiny_bert_dir.parent], hf_cache=fake_hf_cache(tmp_path))
    assert caught.value.known == sorted([BUNDLED_MODEL_ID, "tiny-bert", "tiny-gpt2", "acme/tiny-roberta"])
    assert caught.value.param == "base_model"
    assert "tiny-bert" in str(caught.value) and "bert-huge" in str(caught.value)


def test_a_missing_model_directory_is_skipped(tmp_path: Path) -> None:
    models = list_base_models([tmp_path / "nowhere"], hf_cache=tmp_path)
    assert [info.id for info in models] == [BUNDLED_MODEL_ID]
