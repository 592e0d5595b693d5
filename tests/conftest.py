from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_bert, make_tiny_gpt2


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding one tiny BERT named `tiny-bert` (pass the parent as a model dir)."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_bert(root / "tiny-bert")
    return root / "tiny-bert"


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_bert_dir: Path) -> Path:
    """A tiny GPT-2 named `tiny-gpt2`, in the same models directory as `tiny-bert`."""
    return make_tiny_gpt2(tiny_bert_dir.parent / "tiny-gpt2")
