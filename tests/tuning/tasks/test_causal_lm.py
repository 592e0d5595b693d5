"""causal_lm end to end on the tiny GPT-2: token labels through the real tokenizer, training with
each method family, and artifacts PEFT reloads as AutoModelForCausalLM."""

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel, PeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tuning.datasets import write_jsonl
from tuning.artifacts import write_artifact
from tuning.artifacts.load import load_artifact
from tuning.batching import IGNORE_INDEX
from tuning.data import ChatExample, Message, PromptCompletionExample
from tuning.errors import SpecError
from tuning.fit import fit
from tuning.methods import METHODS as REGISTERED
from tuning.methods import PEFT_METHODS
from tuning.spec import JobSpec
from tuning.tasks import task_named
from tuning.tasks.causal_lm import next_token_targets

CORPUS = Path(__file__).parents[3] / "examples" / "lm"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} {{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def lm_spec(method: dict[str, Any], **overrides: Any) -> JobSpec:
    hp = {"epochs": 3, "batch_size": 16, "learning_rate": 1e-2, "max_seq_length": 64, "logging_steps": 5}
    return JobSpec.model_validate(
        {
            "base_model": "tiny-gpt2",
            "task": "causal_lm",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": method,
            "hyperparameters": hp | overrides.pop("hyperparameters", {}),
        }
        | overrides
    )


LORA = {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["c_attn", "c_proj", "c_fc"]}


def test_labels_through_the_models_tokenizer(tiny_gpt2_dir: Path) -> None:
    task = task_named("causal_lm")
    spec = lm_spec(LORA, data={"chat_template": CHAT_TEMPLATE})
    task_model = task.load(spec, tiny_gpt2_dir, [])
    assert task_model.head_modules == [] and not any(p.requires_grad for p in task_model.model.parameters())
    assert "lm_head.weight" in task_model.pretrained
    prompt = PromptCompletionExample("the colour of the sky is", " blue", 1)
    chat = ChatExample((Message("user", "name a pet"), Message("assistant", "a cat")), 2)
    encoded = task.encode(task_model, spec, [prompt, chat], [])
    assert encoded.label_kind == "tokens"
    (prompt_ids, chat_ids), (prompt_labels, chat_labels) = encoded.input_ids, encoded.labels
    assert prompt_labels == [IGNORE_INDEX] * 6 + prompt_ids[6:] and prompt_ids[-1] == 102
    tokenizer = task_model.tokenizer
    learnt = [t for t, label in zip(chat_ids, chat_labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(learnt) == "a cat [SEP]"


@pytest.mark.parametrize("virtual", [0, 3])
def test_next_token_targets_give_the_loss_of_sliced_logits(virtual: int) -> None:
    # Position t predicts token t + 1; a prompt's virtual positions and the last one predict nothing.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 50, (2, 6), generator=generator)
    labels[0, :2] = labels[1, 4:] = IGNORE_INDEX  # a prompt not learnt, and padding
    logits = torch.randn(2, virtual + 6, 50, generator=generator)
    sliced = logits[:, virtual:-1].reshape(-1, 50)
    expected = torch.nn.functional.cross_entropy(sliced, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    targets = next_token_targets(labels, virtual + 6)
    assert targets.shape == logits.shape[:2]
    assert (targets[:, :virtual] == IGNORE_INDEX).all() and (targets[:, -1] == IGNORE_INDEX).all()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 50), targets.view(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


def test_chat_without_a_template_is_refused_by_name(tiny_gpt2_dir: Path) -> None:
    task = task_named("causal_lm")
    spec = lm_spec(LORA)
    task_model = task.load(spec, tiny_gpt2_dir, [])
    chat = ChatExample((Message("user", "hi"), Message("assistant", "hello")), 1)
    with pytest.raises(SpecError) as refused:
        task.encode(task_model, spec, [chat], [])
    assert refused.value.param == "data.chat_template"


@pytest.fixture(scope="module")
def pretrained_lm(tiny_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with `tiny-lm`: the tiny GPT-2 fully trained on two of the corpus's five
    sentence patterns. A random decoder's frozen, tiny embeddings cap its logits (perplexity stays
    near the vocabulary size whatever LoRA does), so the methods adapt a model that has learnt words."""
    corpus = _corpus_module()
    directory = tmp_path_factory.mktemp("lm-models")
    rng = random.Random(7)
    texts = [corpus.sentence(rng, corpus.PATTERNS[:2]) for _ in range(100)]
    corpus.write_texts(directory / "pretraining.jsonl", texts)
    spec = lm_spec(
        {"type": "full"}, validation_file=None, hyperparameters={"epochs": 4, "max_seq_length": 32}
    )
    fitted = fit(spec, training_path=directory / "pretraining.jsonl", model_dirs=[tiny_gpt2_dir.parent])
    fitted.job.model.save_pretrained(directory / "tiny-lm")
    fitted.job.tokenizer.save_pretrained(directory / "tiny-lm")
    return directory


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first 96 training lines of examples/lm (all five patterns) and 32 validation lines."""
    directory = tmp_path_factory.mktemp("lm-corpus")
    train = (CORPUS / "train.jsonl").read_text().splitlines()[:96]
    validation = (CORPUS / "validation.jsonl").read_text().splitlines()[:32]
    return write_jsonl(directory / "train.jsonl", train), write_jsonl(
        directory / "validation.jsonl", validation
    )


def _corpus_module():  # examples/ is not a package: load make_corpus.py by path
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adapt(
    method: dict[str, Any], learning_rate: float, models: Path, files: tuple[Path, Path], epochs: int = 2
) -> Any:
    hyperparameters = {"learning_rate": learning_rate, "epochs": epochs, "batch_size": 8}
    spec = lm_spec(method, base_model="tiny-lm", hyperparameters=hyperparameters)
    return fit(spec, training_path=files[0], validation_path=files[1], model_dirs=[models])


METHODS = {
    # (method, learning rate, epochs, the most val_perplexity / initial_val_perplexity may be)
    "lora": (LORA, 2e-2, 2, 0.75),
    "prompt_tuning": ({"type": "prompt_tuning", "num_virtual_tokens": 8}, 3e-1, 4, 0.95),
    "prefix_tuning": ({"type": "prefix_tuning", "num_virtual_tokens": 8, "projection": True}, 3e-2, 4, 0.85),
    "bitfit": ({"type": "bitfit"}, 5e-2, 2, 0.85),
    "full": ({"type": "full"}, 3e-3, 2, 0.6),
    "partial": ({"type": "partial", "last_n_layers": 1}, 1e-2, 2, 0.85),
    "adapter": ({"type": "adapter", "placement": "houlsby", "bottleneck_size": 8}, 2e-2, 2, 0.85),
    "delta": ({"type": "delta", "target_modules": ["c_attn", "c_fc"]}, 3e-3, 2, 0.75),
    "input_adapter": ({"type": "input_adapter", "bottleneck_size": 8}, 2e-2, 2, 0.95),
}


@pytest.mark.parametrize("name", list(REGISTERED))  # a method without a row above fails
def test_each_method_lowers_validation_perplexity(
    name: str, pretrained_lm: Path, corpus_files: tuple[Path, Path]
) -> None:
    method, learning_rate, epochs, most = METHODS[name]
    metrics = adapt(method, learning_rate, pretrained_lm, corpus_files, epochs).job.metrics
    print(name, {k: round(v, 3) for k, v in metrics.items() if "perplexity" in k or "accuracy" in k})
    assert metrics["val_perplexity"] < most * metrics["initial_val_perplexity"]
    assert metrics["val_token_accuracy"] > metrics["initial_val_token_accuracy"]


ARTIFACT_JOBS = {
    "lora": LORA,
    "prompt_tuning": {"type": "prompt_tuning", "num_virtual_tokens": 4},
    "prefix_tuning": {"type": "prefix_tuning", "num_virtual_tokens": 4, "projection": True},
}


@pytest.mark.parametrize("name", sorted(PEFT_METHODS))  # every method PEFT can reload
def test_peft_reloads_the_artifact_as_a_causal_lm(
    name: str, pretrained_lm: Path, corpus_files: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = lm_spec(
        ARTIFACT_JOBS[name], base_model="tiny-lm", hyperparameters={"epochs": 1, "learning_rate": 5e-2}
    )
    fitted = fit(spec, training_path=corpus_files[0], model_dirs=[pretrained_lm])
    write_artifact(tmp_path, fitted.job)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and "modules_to_save" not in config

    base = pretrained_lm / "tiny-lm"
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = ["Anna has a red cat.", "On Monday, Ben walked to the park with the dog."]
    inputs = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    width = inputs["input_ids"].shape[1]
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        ours = fitted.job.model(**inputs).logits[:, -width:][real]
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft = PeftModel.from_pretrained(plain, tmp_path).eval()
        assert isinstance(peft, PeftModelForCausalLM)
        theirs = peft(**inputs).logits[:, -width:][real]
        untuned = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(**inputs).logits[real]
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert (ours - untuned).abs().max() > 1e-2  # the adapter did change the predictions


DELTATUNE_LAYOUT_JOBS = [name for name, entry in REGISTERED.items() if entry.layout == "deltatune"]


@pytest.mark.parametrize("name", DELTATUNE_LAYOUT_JOBS)
def test_deltatune_layout_artifacts_reload_as_the_trained_causal_lm(
    name: str, pretrained_lm: Path, corpus_files: tuple[Path, Path], tmp_path: Path
) -> None:
    method = METHODS[name][0]
    spec = lm_spec(method, base_model="tiny-lm", hyperparameters={"epochs": 1, "learning_rate": 2e-2})
    fitted = fit(spec, training_path=corpus_files[0], model_dirs=[pretrained_lm])
    write_artifact(tmp_path, fitted.job)
    loaded = load_artifact(tmp_path, model_dirs=[pretrained_lm], device=torch.device("cpu"))
    tokenizer = loaded.tokenizer
    inputs = dict(tokenizer(["Anna has a red cat."], add_special_tokens=False, return_tensors="pt"))
    with torch.no_grad():
        ours = fitted.job.model(**inputs).logits
        theirs = loaded.model(**inputs).logits
        untuned = AutoModelForCausalLM.from_pretrained(pretrained_lm / "tiny-lm")(**inputs).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert (ours - untuned).abs().max() > 1e-3
