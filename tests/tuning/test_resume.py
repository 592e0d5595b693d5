"""Exact resume: a job killed at step s and resumed from its latest resume point k ends with the same
weights, metrics and events as the same job never interrupted.

Each case runs a job three times: uninterrupted; with resume points every few steps, killed at step s
(in-process: an exception out of the event sink at step s's metrics event, the moment a SIGKILL could
land; the worker's tests kill real processes); and resumed from the latest point. On the CPU the
resumed job is bit-identical; the tolerance is float32's, a few dozen ulps of the values' magnitude.
"""

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import make_tiny_bert
from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning import Event, JobSpec, ResumeMismatch, ResumeOptions, ResumePoint, RunResult, device, run
from tuning.checkpoints import Checkpoint
from tuning.parts.head_start import starts_from_probe
from tuning.resume import (
    MANIFEST,
    JobIdentity,
    ResumePointWriter,
    read_point_manifest,
    write_complete_or_absent,
)

logger = logging.getLogger(__name__)

CORPUS = Path(__file__).parents[2] / "examples" / "lm"
RTOL = 64 * torch.finfo(torch.float32).eps  # float32 rounding, with room for a few dozen operations
TIME_KEYS = frozenset({"elapsed_seconds", "examples_per_second", "train_seconds", "eval_seconds"})


class Killed(Exception):
    """The worker's process dies here."""


@dataclass
class Attempt:
    events: list[Event] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    result: RunResult | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # the artifact's tensors

    def step_events(self) -> list[tuple[str, int, dict[str, Any]]]:
        return [
            (event.type, event.data["step"], without_time(event.data))
            for event in self.events
            if "step" in event.data
        ]


@dataclass(frozen=True)
class Files:
    training: Path
    validation: Path | None
    models: list[Path]
    fisher: Path | None = None


def attempt(
    spec: JobSpec,
    out_dir: Path,
    files: Files,
    *,
    kill_at: int | None = None,
    resume: ResumeOptions | None = None,
    resume_from: Path | None = None,
) -> Attempt:
    """One run of the job; `kill_at` kills it while step `kill_at` runs (at its metrics event)."""
    seen = Attempt()

    def on_event(event: Event) -> None:
        seen.events.append(event)
        if event.type == "metrics" and event.data["step"] == kill_at:
            raise Killed()

    def on_checkpoint(checkpoint: Checkpoint, dropped: Any) -> None:
        seen.checkpoints.append(checkpoint.step)
        seen.dropped.extend(dropped)

    try:
        seen.result = run(
            spec,
            out_dir,
            training_path=files.training,
            validation_path=files.validation,
            fisher_path=files.fisher,
            model_dirs=files.models,
            on_checkpoint=on_checkpoint,
            on_event=on_event,
            resume=resume,
            resume_from=resume_from,
        )
    except Killed:
        return seen
    for path in sorted(out_dir.glob("*.safetensors")):
        seen.weights.update({f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()})
    return seen


class Store:
    """The worker's side of the sink: moves each point into its own store, as it is allowed to."""

    def __init__(self, root: Path, *, lose_job_at: int | None = None) -> None:
        self.root, self.lose_job_at = root, lose_job_at
        self.points: list[ResumePoint] = []
        root.mkdir(parents=True)

    def __call__(self, point: ResumePoint) -> None:
        manifest = read_point_manifest(point.folder)  # complete when the sink sees it
        assert sorted(manifest["files"]) == sorted(path.name for path in point.folder.iterdir())
        stored = self.root / point.folder.name
        shutil.move(point.folder, stored)
        self.points.append(ResumePoint(point.step, stored))
        if point.step == self.lose_job_at:
            raise Killed()  # a sink that raises stops the run: the worker learnt it lost the job

    @property
    def latest(self) -> ResumePoint:
        return self.points[-1]


def interrupted_and_resumed(
    spec: JobSpec,
    tmp: Path,
    files: Files,
    *,
    every_steps: int,
    kill_at: int | None = None,
    lose_job_at: int | None = None,
) -> tuple[Attempt, Attempt, Attempt, int]:
    """(uninterrupted, killed, resumed, the step it resumed from)."""
    whole = attempt(spec, tmp / "whole" / "out", files)
    store = Store(tmp / "store", lose_job_at=lose_job_at)
    killed = attempt(
        spec,
        tmp / "killed" / "out",
        files,
        kill_at=kill_at,
        resume=ResumeOptions(every_steps=every_steps, on_resume_point=store),
    )
    assert killed.result is None and not (tmp / "killed" / "out").exists()
    resumed = attempt(spec, tmp / "resumed" / "out", files, resume_from=store.latest.folder)
    return whole, killed, resumed, store.latest.step


def assert_resumed_exactly(whole: Attempt, killed: Attempt, resumed: Attempt, k: int) -> None:
    # Weights: the published tensors of the resumed job are the uninterrupted job's.
    assert whole.result is not None and resumed.result is not None
    assert whole.weights.keys() == resumed.weights.keys() and whole.weights
    difference = max((whole.weights[n] - resumed.weights[n]).abs().max().item() for n in whole.weights)
    scale = max(tensor.abs().max().item() for tensor in whole.weights.values())
    logger.info("resumed from step %d: largest weight difference %.3g (scale %.3g)", k, difference, scale)
    assert difference <= RTOL * scale
    # Metrics and counters.
    expected, got = without_time(whole.result.metrics), without_time(resumed.result.metrics)
    assert got == pytest.approx(expected, rel=RTOL, abs=RTOL)
    assert (resumed.result.steps, resumed.result.examples_seen, resumed.result.trained_tokens) == (
        whole.result.steps,
        whole.result.examples_seen,
        whole.result.trained_tokens,
    )
    # Events: the killed attempt's up to step k and the resumed one's form the uninterrupted series.
    announced = [event for event in resumed.events if event.message == f"resumed from step {k}"]
    assert len(announced) == 1 and announced[0].data["resumed_from_step"] == k
    after = resumed.step_events()
    assert after and all(step > k for _, step, _ in after)
    series = [entry for entry in killed.step_events() if entry[1] <= k] + after
    assert [(kind, step) for kind, step, _ in series] == [
        (kind, step) for kind, step, _ in whole.step_events()
    ]
    for (_, _, got_data), (_, _, expected_data) in zip(series, whole.step_events(), strict=True):
        assert_same_values(got_data, expected_data)
    # A gradual-unfreezing stage is announced once, by the attempt that trained its first step.
    kept = [e for e in killed.events if e.data.get("step", 0) <= k] + resumed.events
    stages = [e.data["unfreeze_stage"] for e in kept if "unfreeze_stage" in e.data]
    assert stages == sorted(set(stages))


def without_time(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name not in TIME_KEYS}


def assert_same_values(got: Any, expected: Any) -> None:
    """Equal events' data: floats within float32 rounding, everything else exactly."""
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for name in expected:
            assert_same_values(got[name], expected[name])
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=RTOL, abs=RTOL)
    else:
        assert got == expected


def probe_events(events: list[Event]) -> list[Event]:
    """The events that say the head was fitted as a linear probe (head.initialization "probe")."""
    return [event for event in events if event.data.get("head_initialization") == "probe"]


def sentiment_spec(**overrides: Any) -> JobSpec:
    """Three epochs of 4 steps on the small sentiment files, a metrics event at every step."""
    hp = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.1, "logging_steps": 1}
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "hyperparameters": hp | overrides.pop("hyperparameters", {}),
        }
        | overrides
    )


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory, model_dirs: list[Path]) -> Files:
    """32 training examples (4 steps an epoch) and 16 validation examples."""
    directory = tmp_path_factory.mktemp("small-sentiment")
    training = write_jsonl(directory / "train.jsonl", sentiment_lines(32, seed=1))
    return Files(
        training, write_jsonl(directory / "validation.jsonl", sentiment_lines(16, seed=2)), model_dirs
    )


LORA = {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["query", "value"]}

# name: (spec, resume points every N steps, killed while step s runs); 4 steps an epoch, 12 in all.
CASES: dict[str, tuple[JobSpec, int, int]] = {
    # Mid-epoch point (step 6); LoRA's own dropout on top of BERT's; user checkpoints too.
    "lora_dropout": (sentiment_spec(method=LORA, checkpoints={"every_steps": 2, "keep": 2}), 3, 7),
    # The point is an epoch's end (step 4): the resumed job draws epoch 2's order itself.
    "full_layer_lr_decay": (
        sentiment_spec(
            method={"type": "full"}, layer_lr_decay={"decay": 0.8}, hyperparameters={"learning_rate": 1e-3}
        ),
        4,
        6,
    ),
    "prompt_tuning": (
        sentiment_spec(
            method={"type": "prompt_tuning", "num_virtual_tokens": 4}, hyperparameters={"learning_rate": 1e-1}
        ),
        5,
        7,
    ),
    # Length-grouped batches (the classifier's default) and bf16 autocast; a mid-epoch point (step 6)
    # holds epoch 2's grouped order. And the plain shuffled order, for comparison.
    "lora_grouped_bf16": (
        sentiment_spec(method=LORA, hyperparameters={"group_by_length": True, "mixed_precision": "bf16"}),
        3,
        7,
    ),
    "lora_shuffled": (sentiment_spec(method=LORA, hyperparameters={"group_by_length": False}), 3, 7),
    # The head fitted as a linear probe before step 1 (LP-FT), by the first attempt alone.
    "lora_probe_head": (sentiment_spec(method=LORA, head={"initialization": "probe"}), 3, 7),
    # Resumed from step 3, the resumed job crosses the epoch boundary itself.
    "adapter": (sentiment_spec(method={"type": "adapter", "bottleneck_size": 8}), 3, 4),
    "gradual_unfreeze_l2sp": (
        sentiment_spec(
            method={"type": "full"},
            gradual_unfreeze={"every": 2, "unit": "steps"},
            regularizers={"l2sp": {"weight": 0.1, "new_weight": 0.01}},
            hyperparameters={"learning_rate": 1e-3},
        ),
        3,
        7,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_job_resumes_as_if_never_interrupted(case: str, sentiment: Files, tmp_path: Path) -> None:
    spec, every_steps, kill_at = CASES[case]
    whole, killed, resumed, k = interrupted_and_resumed(
        spec, tmp_path, sentiment, every_steps=every_steps, kill_at=kill_at
    )
    assert k == kill_at // every_steps * every_steps
    assert_resumed_exactly(whole, killed, resumed, k)
    # A head fitted as a probe first (head.initialization) is fitted by the first attempt only: the
    # resumed one starts from the point's weights.
    assert len(probe_events(killed.events)) == int(starts_from_probe(spec))
    assert not probe_events(resumed.events)
    if spec.checkpoints is not None:  # the user's checkpoints: the same steps, the same ones dropped
        assert [s for s in killed.checkpoints if s <= k] + resumed.checkpoints == whole.checkpoints
        assert [s for s in killed.dropped if s <= k] + resumed.dropped == whole.dropped


def test_a_job_resumed_where_auto_picks_another_precision_trains_on_in_its_own(
    sentiment: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mixed_precision "auto" follows the CPU's bf16 instructions: a point written on one CPU and resumed
    on another (here: this one, told it has the other kind) goes on in the precision it trained in."""
    spec = sentiment_spec(method=LORA)
    native = device.cpu_has_native_bf16()
    wrote, other = ("bf16", "no") if native else ("no", "bf16")
    whole = attempt(spec, tmp_path / "whole" / "out", sentiment)
    store = Store(tmp_path / "store")
    killed = attempt(
        spec,
        tmp_path / "killed" / "out",
        sentiment,
        kill_at=7,
        resume=ResumeOptions(every_steps=3, on_resume_point=store),
    )
    assert read_point_manifest(store.latest.folder)["mixed_precision"] == wrote
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: not native)
    resumed = attempt(spec, tmp_path / "resumed" / "out", sentiment, resume_from=store.latest.folder)
    told = [event.data for event in resumed.events if "auto_here" in event.data]
    assert told == [{"mixed_precision": wrote, "auto_here": other}]
    assert_resumed_exactly(whole, killed, resumed, store.latest.step)


def test_early_stopping_resumes_with_its_best_weights_and_patience(sentiment: Files, tmp_path: Path) -> None:
    """BitFit evaluated every 2 steps: its best is step 6's and it stops at 10, after two evaluations
    without improvement; killed at 9, it resumes from 8, between the two."""
    spec = sentiment_spec(
        method={"type": "bitfit"},
        early_stopping={"metric": "loss", "patience": 2},
        hyperparameters={"epochs": 6, "eval_steps": 2, "learning_rate": 3e-1},
    )
    whole, killed, resumed, k = interrupted_and_resumed(spec, tmp_path, sentiment, every_steps=2, kill_at=9)
    assert_resumed_exactly(whole, killed, resumed, k)
    assert whole.result is not None and whole.result.steps < 24  # it did stop early
    assert whole.result.metrics["best_step"] < k  # its best weights reached the resumed job through the point


def test_ewc_resumes_with_the_same_fisher(sentiment: Files, tmp_path: Path) -> None:
    spec = sentiment_spec(
        method={"type": "bitfit"},
        regularizers={"ewc": {"weight": 100.0, "fisher_file": "file-train", "fisher_examples": 12}},
        hyperparameters={"learning_rate": 5e-2},
    )
    files = Files(sentiment.training, sentiment.validation, sentiment.models, fisher=sentiment.training)
    # The sink raises at point 6: the worker stored it, then learnt it had lost the job.
    whole, killed, resumed, k = interrupted_and_resumed(spec, tmp_path, files, every_steps=3, lose_job_at=6)
    assert k == 6
    assert_resumed_exactly(whole, killed, resumed, k)
    announced = next(event for event in resumed.events if "resumed_from_step" in event.data)
    assert announced.data["fisher_identical"] is True


def test_a_packed_causal_lm_job_resumes_exactly(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """24 texts packed into 32-token sequences: 4 steps an epoch; resumed mid-epoch from step 3."""
    lines = (CORPUS / "train.jsonl").read_text().splitlines()
    training = write_jsonl(tmp_path / "train.jsonl", lines[:24])
    validation = write_jsonl(
        tmp_path / "validation.jsonl", (CORPUS / "validation.jsonl").read_text().splitlines()[:8]
    )
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-gpt2",
            "task": "causal_lm",
            "training_file": "file-train",
            "validation_file": "file-validation",
            "method": {"type": "lora", "r": 4, "dropout": 0.1, "target_modules": ["c_attn"]},
            "data": {"packing": True},
            "hyperparameters": {
                "epochs": 2,
                "batch_size": 4,
                "learning_rate": 2e-2,
                "max_seq_length": 32,
                "logging_steps": 1,
            },
        }
    )
    files = Files(training, validation, [tiny_gpt2_dir.parent])
    whole, killed, resumed, k = interrupted_and_resumed(
        spec, tmp_path / "runs", files, every_steps=3, kill_at=5
    )
    assert k == 3 and whole.result is not None and whole.result.steps == 8
    assert_resumed_exactly(whole, killed, resumed, k)


# Resume points themselves: where they go, what they hold, when they are written, and whose they are.


@dataclass(frozen=True)
class TwoEpochs:
    spec: JobSpec
    out_dir: Path
    events: list[Event]
    result: RunResult


@pytest.fixture(scope="module")
def two_epochs(sentiment: Files, tmp_path_factory: pytest.TempPathFactory) -> TwoEpochs:
    """Two epochs (8 steps) of LoRA with a point every 2 steps and no sink; a crashed write of an earlier
    attempt left a partial folder in the scratch folder."""
    spec = sentiment_spec(method=LORA, hyperparameters={"epochs": 2})
    out_dir = tmp_path_factory.mktemp("two-epochs") / "out"
    (out_dir.with_name("out-resume") / ".step-00000002.partial").mkdir(parents=True)
    events: list[Event] = []
    result = run(
        spec,
        out_dir,
        training_path=sentiment.training,
        validation_path=sentiment.validation,
        model_dirs=sentiment.models,
        on_event=events.append,
        resume=ResumeOptions(every_steps=2),
    )
    return TwoEpochs(spec, out_dir, events, result)


def test_only_the_latest_point_is_left_beside_out_dir(two_epochs: TwoEpochs) -> None:
    scratch = two_epochs.out_dir.with_name("out-resume")
    assert sorted(path.name for path in scratch.iterdir()) == ["step-00000008"]  # the partial one cleared too
    manifest = read_point_manifest(scratch / "step-00000008")
    assert manifest["step"] == 8 and manifest["epoch"] == 2.0
    assert manifest["position"] == {"epoch": 2, "batches_done": 0}
    # Not its resources: a job resumes on any number of processes (tests/tuning/test_distributed.py).
    assert manifest["job"]["spec"] == two_epochs.spec.model_dump(mode="json", exclude={"resources"})
    assert set(manifest["job"]["data"]) == {"training_file", "validation_file"}
    assert manifest["job"]["base_model"]["weights_sha256"]
    assert manifest["versions"]["torch"] and manifest["format_version"] == 1
    assert sorted(manifest["files"]) == sorted(path.name for path in (scratch / "step-00000008").iterdir())


def test_a_peft_point_holds_only_the_trainable_tensors(two_epochs: TwoEpochs, tiny_bert_dir: Path) -> None:
    point = two_epochs.out_dir.with_name("out-resume") / "step-00000008"
    stored = set(load_file(point / "trainable.safetensors"))
    started = next(event for event in two_epochs.events if "trainable_parameters" in event.data)
    assert stored and all(".lora_" in name or name.startswith("classifier.") for name in stored)
    count = sum(tensor.numel() for tensor in load_file(point / "trainable.safetensors").values())
    assert count == started.data["trainable_parameters"]
    base_bytes = sum(path.stat().st_size for path in tiny_bert_dir.glob("*.safetensors"))
    assert sum(path.stat().st_size for path in point.iterdir()) < base_bytes / 20


def test_a_point_of_the_last_step_resumes_to_the_same_artifact(
    two_epochs: TwoEpochs, sentiment: Files, tmp_path: Path
) -> None:
    """Killed while exporting: the resumed job trains nothing and publishes the same artifact."""
    point = two_epochs.out_dir.with_name("out-resume") / "step-00000008"
    resumed = attempt(two_epochs.spec, tmp_path / "out", sentiment, resume_from=point)
    assert resumed.result is not None and not resumed.step_events()
    assert without_time(resumed.result.metrics) == without_time(two_epochs.result.metrics)
    published = load_file(two_epochs.out_dir / "adapter_model.safetensors")
    assert resumed.weights.keys() == {f"adapter_model.safetensors:{name}" for name in published}
    assert all(
        torch.equal(resumed.weights[f"adapter_model.safetensors:{n}"], t) for n, t in published.items()
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("spec", "spec differs in hyperparameters"),
        ("training_file", "trained on another training_file"),
        ("base_model", "other weights of tiny-bert"),
        ("not_a_point", "is not a resume point"),
    ],
)
def test_a_point_of_another_job_is_refused_before_the_model_loads(
    change: str, says: str, two_epochs: TwoEpochs, sentiment: Files, tmp_path: Path
) -> None:
    point = two_epochs.out_dir.with_name("out-resume") / "step-00000008"
    spec, files = two_epochs.spec, sentiment
    if change == "spec":
        spec = sentiment_spec(method=LORA, hyperparameters={"epochs": 2, "learning_rate": 2e-2})
    elif change == "training_file":
        files = Files(
            write_jsonl(tmp_path / "t.jsonl", sentiment_lines(64, seed=5)), files.validation, files.models
        )
    elif change == "base_model":
        make_tiny_bert(tmp_path / "models" / "tiny-bert", seed=1)  # same name, other weights
        files = Files(files.training, files.validation, [tmp_path / "models"])
    else:
        point = two_epochs.out_dir  # an artifact, not a resume point
    events: list[Event] = []
    with pytest.raises(ResumeMismatch, match=says) as refused:
        run(
            spec,
            tmp_path / "out",
            training_path=files.training,
            validation_path=files.validation,
            model_dirs=files.models,
            on_event=events.append,
            resume_from=point,
        )
    assert refused.value.param == "resume_from" and refused.value.code == "resume_mismatch"
    assert not any(event.message.startswith("loading") for event in events)


def test_every_seconds_writes_a_point_once_that_long_has_passed(sentiment: Files, tmp_path: Path) -> None:
    """A fake clock: each step takes 10 s; a point is due 25 s after the last (or the start)."""
    now = [0.0]
    points: list[int] = []

    def on_event(event: Event) -> None:
        if event.type == "metrics":
            now[0] += 10.0

    run(
        sentiment_spec(method=LORA, hyperparameters={"epochs": 2}),
        tmp_path / "out",
        training_path=sentiment.training,
        validation_path=sentiment.validation,
        model_dirs=sentiment.models,
        on_event=on_event,
        resume=ResumeOptions(
            every_seconds=25.0, on_resume_point=lambda p: points.append(p.step), clock=lambda: now[0]
        ),
    )
    assert points == [3, 6]  # 30 s, then 60 s; the epoch's end at 80 s is 20 s after the last


class Interrupted(Exception):
    pass


def test_a_point_is_complete_or_absent(tmp_path: Path) -> None:
    def half(folder: Path) -> None:
        (folder / "trainable.safetensors").write_bytes(b"half of it")
        raise Interrupted()

    with pytest.raises(Interrupted):
        write_complete_or_absent(tmp_path, "step-00000004", half)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its partial one

    def whole(folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps({"kind": "test"}))

    folder = write_complete_or_absent(tmp_path, "step-00000004", whole)
    assert folder == tmp_path / "step-00000004" and [p.name for p in tmp_path.iterdir()] == ["step-00000004"]


def test_a_killed_write_leaves_a_hidden_folder_the_next_writer_clears(tmp_path: Path) -> None:
    """SIGKILL inside write_complete_or_absent leaves only `.step-<k>.partial`, never `step-<k>`."""
    (tmp_path / ".step-00000004.partial").mkdir()
    (tmp_path / ".step-00000004.partial" / "optimizer.pt").write_bytes(b"cut short")
    (tmp_path / "step-00000002").mkdir()  # an earlier attempt's complete point is not the writer's to delete
    ResumePointWriter(ResumeOptions(every_steps=1), tmp_path, JobIdentity(spec={}, data={}, base_model={}))
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000002"]


def test_resume_options_refuse_a_cadence_that_never_comes() -> None:
    with pytest.raises(ValueError, match="every_steps"):
        ResumeOptions(every_steps=0)
    with pytest.raises(ValueError, match="every_seconds"):
        ResumeOptions(every_seconds=0.0)
