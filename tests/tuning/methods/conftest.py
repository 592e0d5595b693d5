from pathlib import Path

import pytest


@pytest.fixture(params=["tiny_bert_dir", "tiny_gpt2_dir"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    """Each method test that takes this runs on an encoder (BERT) and a decoder (GPT-2 with Conv1D)."""
    path: Path = request.getfixturevalue(request.param)
    return path
