"""Gradual unfreezing: the head first, then one more layer group from the top per stage (ULMFiT)."""

import json
from collections.abc import Callable
from pathlib import Path

import torch

from tuning import Event, JobSpec, run
from tuning.batching import encode
from tuning.layers import LayerMap, find_layers
from tuning.methods.apply import MethodContext, apply_method, trainable_names
from tuning.methods.full import FullMethod
from tuning.methods.lora import LoraMethod
from tuning.optim import parameter_groups
from tuning.parts.unfreeze import UnfreezeSchedule
from tuning.spec import GradualUnfreeze, Hyperparameters, Method
from tuning.task_model import TaskModel, load_classifier
from tuning.tasks.single_label import TASK as SINGLE_LABEL
from tuning.train import train

MakeSpec = Callable[..., JobSpec]
HEAD = ("classifier.", "bert.pooler.")
LAYER_1 = ("bert.encoder.layer.1.",)
LAYER_0 = ("bert.encoder.layer.0.",)
EMBEDDINGS = ("bert.embeddings.",)


def build(model_dir: Path, method: Method) -> tuple[TaskModel, LayerMap]:
    torch.manual_seed(0)
    built = load_classifier(model_dir, ["negative", "positive"], max_seq_length=32)
    layers = find_layers(built.model, built.head_modules)
    apply_method(built.model, method, MethodContext(built.tokenizer, built.head_modules, layers))
    return built, layers


def names_under(built: TaskModel, prefixes: tuple[str, ...]) -> set[str]:
    return {name for name, _ in built.model.named_parameters() if name.startswith(prefixes)}


def test_each_step_unfreezes_the_next_group_down(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, FullMethod())
    schedule = UnfreezeSchedule(
        built.model, layers, GradualUnfreeze(every=1, unit="steps"), steps_per_epoch=3
    )
    stages = [
        (HEAD, ["head"]),
        (HEAD + LAYER_1, ["head", "layer 1"]),
        (HEAD + LAYER_1 + LAYER_0, ["head", "layer 1", "layer 0"]),
        (HEAD + LAYER_1 + LAYER_0 + EMBEDDINGS, ["head", "layer 1", "layer 0", "embeddings"]),
    ]
    for step, (prefixes, groups) in enumerate(stages, start=1):
        event = schedule(step, (step - 1) // 3)
        assert event is not None and event.type == "message"
        trainable = set(trainable_names(built.model))
        assert trainable == names_under(built, prefixes)
        count = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
        assert event.data == {
            "step": step,
            "unfreeze_stage": step - 1,
            "trainable_groups": groups,
            "trainable_parameters": count,
        }
    assert schedule(5, 1) is None and schedule(40, 13) is None  # all unfrozen: nothing more to say
    assert set(trainable_names(built.model)) == {name for name, _ in built.model.named_parameters()}


def test_stages_last_every_n_epochs(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, FullMethod())
    schedule = UnfreezeSchedule(
        built.model, layers, GradualUnfreeze(every=2, unit="epochs"), steps_per_epoch=3
    )
    stages = {}
    for epoch in range(5):
        for step in range(epoch * 3 + 1, epoch * 3 + 4):
            event = schedule(step, epoch)
            if event is not None:
                stages[(epoch, step)] = event.data["unfreeze_stage"]
    assert stages == {(0, 1): 0, (2, 7): 1, (4, 13): 2}
    assert set(trainable_names(built.model)) == names_under(built, HEAD + LAYER_1 + LAYER_0)


def test_only_the_method_trainable_set_is_unfrozen_group_by_group(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, LoraMethod(r=2, target_modules=["query"]))
    method_set = set(trainable_names(built.model))
    schedule = UnfreezeSchedule(
        built.model, layers, GradualUnfreeze(every=1, unit="steps"), steps_per_epoch=9
    )
    events = [schedule(step, 0) for step in range(1, 6)]
    # LoRA adds nothing to the embeddings: that depth is no stage, and frozen base weights stay frozen.
    assert [event.data["trainable_groups"] for event in events if event is not None] == [
        ["head"],
        ["head", "layer 1"],
        ["head", "layer 1", "layer 0"],
    ]
    assert set(trainable_names(built.model)) == method_set


def test_layers_not_yet_unfrozen_stay_bit_identical_under_adamw_weight_decay(tiny_bert_dir: Path) -> None:
    built, layers = build(tiny_bert_dir, FullMethod())
    before = {name: p.detach().clone() for name, p in built.model.named_parameters()}
    hp = Hyperparameters(epochs=2, batch_size=4, learning_rate=1e-2, weight_decay=0.1, warmup_ratio=0.0)
    texts = ["a wonderful movie", "awful and boring", "i love it", "sad plot"] * 2
    data = encode(built.tokenizer, texts, [1, 0, 1, 0] * 2, max_length=16)
    groups = parameter_groups(built.model, hp.weight_decay)
    schedule = UnfreezeSchedule(
        built.model, layers, GradualUnfreeze(every=2, unit="epochs"), steps_per_epoch=2
    )
    result = train(
        built.model,
        data,
        None,
        hp,
        task=SINGLE_LABEL,
        device=torch.device("cpu"),
        optimizer_groups=groups,
        before_step=schedule,
    )
    assert result.steps == 4 and schedule.stage == 0
    changed = {name for name, p in built.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= names_under(built, HEAD)
    assert "classifier.weight" in changed


def test_a_job_records_each_stage_in_its_events(
    tiny_spec: MakeSpec,
    sentiment_files: tuple[Path, Path],
    model_dirs: list[Path],
    tiny_bert_dir: Path,
    tmp_path: Path,
) -> None:
    base = tiny_spec(method={"type": "full"}, epochs=4, learning_rate=5e-3)
    spec = JobSpec.model_validate(base.model_dump() | {"gradual_unfreeze": {"every": 1, "unit": "epochs"}})
    events: list[Event] = []
    run(
        spec,
        tmp_path / "out",
        training_path=sentiment_files[0],
        model_dirs=model_dirs,
        on_event=events.append,
    )
    stages = [event.data for event in events if "unfreeze_stage" in event.data]
    assert [stage["unfreeze_stage"] for stage in stages] == [0, 1, 2, 3]
    assert stages[-1]["trainable_groups"] == ["head", "layer 1", "layer 0", "embeddings"]
    counts = [stage["trainable_parameters"] for stage in stages]
    assert counts == sorted(counts) and len(set(counts)) == 4
    started = next(event for event in events if event.message.startswith("training started"))
    assert counts[-1] == started.data["trainable_parameters"]
    # Stage 1 begins with the second epoch's first step: 64 examples in batches of 8, logged every 4.
    stage_1 = next(index for index, event in enumerate(events) if event.data.get("unfreeze_stage") == 1)
    assert [event.data["step"] for event in events[:stage_1] if event.type == "metrics"] == [4, 8]
    # The artifact holds every tensor the method trains, whatever the schedule had frozen last.
    manifest = json.loads((tmp_path / "out" / "deltatune.json").read_text())
    pretrained = len(names_under(build(tiny_bert_dir, FullMethod())[0], ("bert.",)))
    assert manifest["delta"]["tensors"] == {"difference": pretrained, "value": 2}  # the head's 2 are new
