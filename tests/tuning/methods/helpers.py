"""What the method tests share: logits without grad, a few real training steps, both tiny models."""

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def model_logits(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    """Eval-mode logits of `texts`, padded to their longest."""
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.eval()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return output.logits


def train_a_little(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int = 3) -> None:
    """A few real SGD steps on three examples (labels 1, 0, 1), so zero-initialised parts move."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = torch.tensor([1, 0, 1])
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(**inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
