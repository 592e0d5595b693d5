from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding one tiny BERT named `tiny-bert` (pass the parent as a model dir)."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_bert(root / "tiny-bert")
    return root / "tiny-bert"
