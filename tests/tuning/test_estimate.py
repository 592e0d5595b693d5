"""The dry run's estimate: parameter counts from safetensors headers and trainable counts per method
agree with the models tuning actually builds; steps agree with the trainer's own count."""

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from transformers import BertModel

from tests.tuning.datasets import sentiment_lines, write_jsonl
from tuning.build import apply_spec_method, prepare_classifier
from tuning.estimate import Worker, count_parameters, estimate_job, trainable_parameters
from tuning.events import Event
from tuning.fit import fit
from tuning.methods import METHODS
from tuning.models import BUNDLED_MODEL_ID, resolve_base_model, tensor_shapes
from tuning.spec import HeadSpec, JobSpec
from tuning.validation import validate_files

# A CPU worker without native bf16, so that training runs in float32 as the formulas below assume.
WORKER = Worker(
    device="cpu",
    float32_flops=1e9,
    layer_seconds=1e-3,
    optimizer_parameters_per_second=1e6,
    baseline_bytes=300 * 2**20,
)
# Tiny BERT (tests/tiny_models.py): 2 layers, 32 wide, 4 heads, feed-forward 64.
LAYERS, HIDDEN, ATTENTION_HEADS = 2, 32, 4
LAYER_WEIGHTS = LAYERS * (4 * 32 * 32 + 2 * 32 * 64)  # M: the 2-D weights inside the layers


def spec_with(method: dict[str, Any], **hyperparameters: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-t",
            "method": method,
            "hyperparameters": hyperparameters,
        }
    )


def test_count_parameters_reads_the_header_without_loading(tiny_bert_dir: Path) -> None:
    loaded = BertModel.from_pretrained(tiny_bert_dir)
    assert count_parameters(tiny_bert_dir) == sum(p.numel() for p in loaded.parameters()) == 999_072


# Every registered method with its catalogue example, and variants whose count is computed otherwise.
ESTIMATED = [{"type": name, **entry.example} for name, entry in METHODS.items()] + [
    {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
    {"type": "prompt_tuning", "num_virtual_tokens": 5},
    {"type": "prefix_tuning", "num_virtual_tokens": 5},
    {"type": "prefix_tuning", "num_virtual_tokens": 5, "projection": True},
    {"type": "prefix_tuning", "num_virtual_tokens": 5, "projection": True, "encoder_hidden_size": 16},
    {"type": "input_adapter", "reduction_factor": 4, "new_tokens": ["zzqxv", "qqzyx"]},
    {"type": "partial", "last_n_layers": 1},
    {"type": "partial", "modules": ["*.attention.*"]},
]


HEADS = [{"type": "linear"}, {"type": "mlp", "hidden_size": 16}]
GPT2_TARGETS = {"lora": {"target_modules": ["c_attn"]}, "delta": {"target_modules": ["c_attn", "c_fc"]}}


@pytest.mark.parametrize("head", HEADS, ids=lambda head: str(head["type"]))
@pytest.mark.parametrize("labels", [2, 5])
@pytest.mark.parametrize("method", ESTIMATED, ids=lambda method: f"{method['type']}-{len(method)}")
@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_the_estimate_counts_what_the_job_trains(
    request: pytest.FixtureRequest, family: str, method: dict[str, Any], labels: int, head: dict[str, Any]
) -> None:
    """The dry run's trainable count is the built job's, the new head included, for every method."""
    if family == "gpt2":
        if "target_modules" in method or "modules" in method:
            pytest.skip("BERT module names")
        method = method | GPT2_TARGETS.get(method["type"], {})
    model_dir: Path = request.getfixturevalue(f"tiny_{family}_dir")
    spec = spec_with(method).model_copy(update={"head": HeadSpec.model_validate(head)})
    classifier = prepare_classifier(spec, model_dir, [f"label{i}" for i in range(labels)])
    apply_spec_method(spec, classifier)
    built = sum(p.numel() for p in classifier.model.parameters() if p.requires_grad)
    config = json.loads((model_dir / "config.json").read_text())
    assert trainable_parameters(spec, tensor_shapes(model_dir), config, outputs=labels) == built


def test_the_parameter_count_leaves_out_stored_buffers() -> None:
    """all-MiniLM-L6-v2's checkpoint stores BERT's position_ids buffer beside its weights."""
    base_path = resolve_base_model(BUNDLED_MODEL_ID, [])
    assert "embeddings.position_ids" in tensor_shapes(base_path)
    loaded = BertModel.from_pretrained(base_path)
    assert count_parameters(base_path) == sum(p.numel() for p in loaded.parameters())


def test_the_dry_run_counts_the_head_as_the_job_does(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    spec = spec_with({"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    events: list[Event] = []
    fit(spec, training_path=training, model_dirs=[tiny_bert_dir.parent], on_event=events.append)
    counted = next(e.data["trainable_parameters"] for e in events if "trainable_parameters" in e.data)
    estimate = estimate_job(spec, tiny_bert_dir, report, worker=WORKER)
    assert estimate.trainable_parameters == counted == 1_024 + 32 * 2 + 2


def test_steps_and_tokens_match_the_trainer(tmp_path: Path, tiny_bert_dir: Path) -> None:
    training = write_jsonl(tmp_path / "train.jsonl", sentiment_lines(10, seed=3))
    spec = spec_with({"type": "bitfit"}, epochs=2, batch_size=4, logging_steps=1)
    report = validate_files(spec, tiny_bert_dir, {"training_file": training})
    estimate = estimate_job(spec, tiny_bert_dir, report, worker=WORKER)
    events: list[Event] = []
    fit(spec, training_path=training, model_dirs=[tiny_bert_dir.parent], on_event=events.append)
    total_steps = {e.data["total_steps"] for e in events if e.type == "metrics"}
    assert estimate.steps == 2 * math.ceil(10 / 4) == 6
    assert total_steps == {estimate.steps}
    assert estimate.tokens == 2 * report["files"]["training_file"]["trained_tokens"]


def report_with(batches: dict[str, int], validation_batches: dict[str, int] | None = None) -> dict[str, Any]:
    training = {
        "format": "classification",
        "examples": 20,
        "trained_tokens": 200,
        "tokens": {"min": 5, "mean": 10, "max": 30},
        "labels": {"negative": 10, "positive": 10},
        "batches": batches,
    }
    files: dict[str, Any] = {"training_file": training}
    if validation_batches is not None:
        files["validation_file"] = {"examples": 4, "trained_tokens": 40, "batches": validation_batches}
    return {"files": files}


TRAIN_BATCHES = {
    "count": 3,
    "padded_tokens": 240,
    "token_pairs": 3000,
    "largest_tokens": 128,
    "largest_pairs": 2048,
}
VALIDATION_BATCHES = {
    "count": 1,
    "padded_tokens": 40,
    "token_pairs": 400,
    "largest_tokens": 40,
    "largest_pairs": 400,
}


def test_time_follows_the_documented_formula(tiny_bert_dir: Path) -> None:
    """BitFit trains down to layer 0: forward and backward through both layers, in float32."""
    spec = spec_with({"type": "bitfit"}, epochs=3, batch_size=8, max_seq_length=16)
    estimate = estimate_job(
        spec, tiny_bert_dir, report_with(TRAIN_BATCHES, VALIDATION_BATCHES), worker=WORKER
    )
    parameters, trainable = 999_072, 640 + 32 * 2 + 2  # the biases, and the head for 2 labels
    assert (estimate.steps, estimate.tokens) == (3 * 3, 600)
    t, p = 240, 3000
    forward = LAYERS * (2 * LAYER_WEIGHTS / LAYERS * t + 4 * HIDDEN * p)
    backward = LAYERS * (2 * LAYER_WEIGHTS / LAYERS * t + 8 * HIDDEN * p) + 2 * trainable * t
    training = 3 * (forward + backward) / 1e9
    overhead = 9 * 1e-3 * (LAYERS + 2 * LAYERS) + 9 * trainable / 1e6
    evaluations = 1 + 3  # before the first step, then each epoch's end
    evaluation = evaluations * LAYERS * (2 * LAYER_WEIGHTS / LAYERS * 40 + 4 * HIDDEN * 400) / 1e9
    evaluation_overhead = evaluations * 1 * 1e-3 * LAYERS
    expected = training + overhead + evaluation + evaluation_overhead
    assert estimate.seconds == pytest.approx(expected, rel=1e-9)
    assert parameters == estimate.parameters
    assert "Korthikanti" in estimate.method and "layer_seconds" in estimate.method


def test_memory_follows_the_documented_formula(tiny_bert_dir: Path) -> None:
    spec = spec_with({"type": "bitfit"}, epochs=3, batch_size=8, max_seq_length=16)
    estimate = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER)
    trainable, head = 640 + 32 * 2 + 2, 32 * 2 + 2
    # Float32 activations of the largest batch (128 tokens, 2,048 pairs), in both layers.
    activations = LAYERS * 2 * (34 * 128 * HIDDEN + 5 * ATTENTION_HEADS * 2048)
    expected = 300 * 2**20 + 2 * 4 * 999_072 + 4 * head + (12 + 8) * trainable + activations
    assert estimate.peak_memory_bytes == expected
    assert estimate.memory_parts["activations"] == activations


def test_gradient_checkpointing_keeps_one_layers_activations(tiny_bert_dir: Path) -> None:
    plain = spec_with({"type": "full"}, epochs=1)
    checkpointed = spec_with({"type": "full"}, epochs=1, gradient_checkpointing=True)
    report = report_with(TRAIN_BATCHES)
    without = estimate_job(plain, tiny_bert_dir, report, worker=WORKER).memory_parts["activations"]
    with_it = estimate_job(checkpointed, tiny_bert_dir, report, worker=WORKER).memory_parts["activations"]
    one_layer = 2 * (34 * 128 * HIDDEN + 5 * ATTENTION_HEADS * 2048)
    assert with_it == LAYERS * 4 * 128 * HIDDEN + one_layer < without == LAYERS * one_layer


def test_a_linear_probe_runs_no_backward_and_caches_the_frozen_layers(tiny_bert_dir: Path) -> None:
    spec = spec_with({"type": "partial", "head_only": True}, epochs=2)
    estimate = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER)
    assert estimate.memory_parts["activations"] == 0
    # The frozen layers run once over the examples (reuse), then steps run only the head.
    assert estimate.seconds_parts["frozen_prefix"] > 0
    assert estimate.memory_parts["frozen_prefix_cache"] == 4 * HIDDEN * 200


def test_bf16_on_a_worker_with_native_bf16(tiny_bert_dir: Path) -> None:
    spec = spec_with({"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]}, epochs=1)
    report = report_with(TRAIN_BATCHES)
    float32 = estimate_job(spec, tiny_bert_dir, report, worker=WORKER)
    bf16 = estimate_job(spec, tiny_bert_dir, report, worker=replace(WORKER, bf16_flops=4e9))
    assert bf16.seconds_parts["training"] == pytest.approx(float32.seconds_parts["training"] / 4)
    assert bf16.memory_parts["activations"] * 2 == float32.memory_parts["activations"]
    assert bf16.memory_parts["bf16_weight_copies"] == 2 * LAYER_WEIGHTS
    # "no" trains float32 on any worker.
    forced = spec.model_copy(
        update={"hyperparameters": spec.hyperparameters.model_copy(update={"mixed_precision": "no"})}
    )
    assert (
        estimate_job(forced, tiny_bert_dir, report, worker=replace(WORKER, bf16_flops=4e9)).seconds
        == float32.seconds
    )


def test_on_cuda_the_frozen_base_is_counted_in_bf16(tiny_bert_dir: Path) -> None:
    report = report_with(TRAIN_BATCHES)
    gpu = replace(WORKER, device="cuda", bf16_flops=4e9)
    lora = spec_with({"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]})
    full = spec_with({"type": "full"})
    lora_weights = estimate_job(lora, tiny_bert_dir, report, worker=gpu).memory_parts
    assert lora_weights["weights"] == 2 * 999_072 + 4 * (1_024 + 66)
    assert lora_weights["baseline"] == 0  # CUDA's peak counts tensors, not the libraries
    assert (
        estimate_job(full, tiny_bert_dir, report, worker=gpu).memory_parts["weights"] == 4 * 999_072 + 4 * 66
    )


def test_packing_counts_packed_sequences(tiny_bert_dir: Path) -> None:
    spec = JobSpec.model_validate(
        {
            "base_model": "tiny-bert",
            "training_file": "file-t",
            "task": "causal_lm",
            "data": {"packing": True},
            "hyperparameters": {"epochs": 1, "batch_size": 2, "max_seq_length": 16},
        }
    )
    report = {"files": {"training_file": {"examples": 10, "trained_tokens": 100, "tokens": {"max": 10}}}}
    estimate = estimate_job(spec, tiny_bert_dir, report, worker=WORKER)
    assert estimate.steps == math.ceil(math.ceil(100 / 16) / 2) == 4


@pytest.mark.parametrize(
    ("method", "tokens", "pairs"),
    [
        # A prompt widens every example by 5 tokens: Σ b·(w+5) and Σ b·(w+5)² over 20 examples.
        ({"type": "prompt_tuning", "num_virtual_tokens": 5}, 240 + 5 * 20, 3000 + 2 * 5 * 240 + 25 * 20),
        # A prefix adds 5 keys to each real token's attention, and no layer input.
        ({"type": "prefix_tuning", "num_virtual_tokens": 5}, 240, 3000 + 5 * 240),
    ],
)
def test_virtual_tokens_cost_what_they_add(
    tiny_bert_dir: Path, method: dict[str, Any], tokens: int, pairs: int
) -> None:
    spec = spec_with(method, epochs=1)
    estimate = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER)
    trainable = estimate.trainable_parameters
    forward = LAYERS * (2 * LAYER_WEIGHTS / LAYERS * tokens + 4 * HIDDEN * pairs)
    backward = LAYERS * (2 * LAYER_WEIGHTS / LAYERS * tokens + 8 * HIDDEN * pairs) + 2 * trainable * tokens
    added = 2 * trainable * tokens  # its new tensors run in the forward too
    assert estimate.seconds_parts["training"] == pytest.approx((forward + backward + added) / 1e9, rel=1e-9)


def on_processes(spec: JobSpec, processes: int) -> JobSpec:
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"processes": processes})})


def test_two_processes_each_hold_half_of_each_batchs_activations(tiny_bert_dir: Path) -> None:
    """DDP: each process holds the whole model, a bucket copy of the gradients, and its half of a batch."""
    spec = spec_with({"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]}, batch_size=8)
    report = report_with(TRAIN_BATCHES)
    one = estimate_job(spec, tiny_bert_dir, report, worker=WORKER)
    two = estimate_job(on_processes(spec, 2), tiny_bert_dir, report, worker=WORKER)
    assert two.memory_parts["activations"] == one.memory_parts["activations"] // 2
    assert two.memory_parts["weights"] == one.memory_parts["weights"]
    assert two.memory_parts["gradient_buckets"] == 4 * two.trainable_parameters
    assert "gradient_buckets" not in one.memory_parts
    assert two.peak_memory_bytes == sum(two.memory_parts.values())


def test_full_on_two_processes_shards_weights_gradients_and_optimizer(tiny_bert_dir: Path) -> None:
    spec = spec_with({"type": "full"}, batch_size=8)
    report = report_with(TRAIN_BATCHES)
    one = estimate_job(spec, tiny_bert_dir, report, worker=WORKER).memory_parts
    two = estimate_job(on_processes(spec, 2), tiny_bert_dir, report, worker=WORKER).memory_parts
    assert two["gradients_and_optimizer"] == one["gradients_and_optimizer"] // 2
    assert two["weights"] == one["weights"] // 2
    outside = 999_072 - LAYER_WEIGHTS  # embeddings, norms, biases, pooler: the root, gathered in a step
    assert two["gathered_weights"] == int(4 * 0.5 * (outside + LAYER_WEIGHTS / LAYERS))


def test_processes_share_a_cpu_and_exchange_gradients_each_step(tiny_bert_dir: Path) -> None:
    """On a CPU the processes divide its cores: half a batch each at half the FLOP/s takes as long as one
    process; on CUDA each has a GPU, so half the time. Each step adds the all-reduce of the gradients."""
    spec = spec_with({"type": "bitfit"}, epochs=1, batch_size=8)
    report = report_with(TRAIN_BATCHES)
    exchanging = replace(WORKER, exchange_bytes_per_second=1e6)
    one = estimate_job(spec, tiny_bert_dir, report, worker=exchanging)
    two = estimate_job(on_processes(spec, 2), tiny_bert_dir, report, worker=exchanging)
    assert two.seconds_parts["training"] == pytest.approx(one.seconds_parts["training"])
    # A ring all-reduce between 2 processes: each sends 2·(2−1)/2 of the float32 gradients.
    assert two.seconds_parts["gradient_exchange"] == pytest.approx(3 * 4 * two.trainable_parameters / 1e6)
    assert "gradient_exchange" not in one.seconds_parts
    gpu = replace(exchanging, device="cuda")
    one_gpu = estimate_job(spec, tiny_bert_dir, report, worker=gpu)
    two_gpus = estimate_job(on_processes(spec, 2), tiny_bert_dir, report, worker=gpu)
    assert two_gpus.seconds_parts["training"] == pytest.approx(one_gpu.seconds_parts["training"] / 2)
    # Every process evaluates the whole validation file: on a shared CPU, at half its speed.
    with_validation = report_with(TRAIN_BATCHES, VALIDATION_BATCHES)
    alone = estimate_job(spec, tiny_bert_dir, with_validation, worker=WORKER).seconds_parts["evaluation"]
    shared = estimate_job(on_processes(spec, 2), tiny_bert_dir, with_validation, worker=WORKER)
    assert shared.seconds_parts["evaluation"] == pytest.approx(2 * alone)


def test_an_odd_batch_is_timed_by_its_larger_share(tiny_bert_dir: Path) -> None:
    """7 rows on 2 processes: the slower one trains 4 of them."""
    spec = spec_with({"type": "bitfit"}, epochs=1, batch_size=7)
    report = report_with(TRAIN_BATCHES)
    gpu = replace(WORKER, device="cuda")
    one = estimate_job(spec, tiny_bert_dir, report, worker=gpu).seconds_parts["training"]
    two = estimate_job(on_processes(spec, 2), tiny_bert_dir, report, worker=gpu).seconds_parts["training"]
    assert two == pytest.approx(one * 4 / 7)


LORA = {"type": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]}
BRANCHY = replace(WORKER, branch_seconds=1e-4, dropout_seconds=1e-8)


def test_loras_branch_overhead_grows_with_the_adapted_weights(tiny_bert_dir: Path) -> None:
    """Each adapted weight's branch costs its small ops every step: forward and twice that backward."""
    report = report_with(TRAIN_BATCHES)
    two = estimate_job(spec_with(LORA, epochs=1), tiny_bert_dir, report, worker=BRANCHY)
    four = estimate_job(
        spec_with(LORA | {"target_modules": ["query", "key", "value", "attention.output.dense"]}, epochs=1),
        tiny_bert_dir,
        report,
        worker=BRANCHY,
    )
    steps, adapted = 3, LAYERS * 2
    assert two.seconds_parts["branch_overhead"] == pytest.approx(steps * 3 * adapted * 1e-4)
    assert four.seconds_parts["branch_overhead"] == pytest.approx(2 * two.seconds_parts["branch_overhead"])
    assert "branch_dropout" not in two.seconds_parts  # dropout 0: no mask drawn
    assert (
        "branch_overhead"
        not in estimate_job(
            spec_with({"type": "bitfit"}, epochs=1), tiny_bert_dir, report, worker=BRANCHY
        ).seconds_parts
    )


def test_loras_dropout_costs_each_branch_input_element(tiny_bert_dir: Path) -> None:
    spec = spec_with(LORA | {"dropout": 0.1}, epochs=2)
    estimate = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=BRANCHY)
    inputs = LAYERS * 2 * HIDDEN  # query and value read the layer's width
    assert estimate.seconds_parts["branch_dropout"] == pytest.approx(2 * 240 * inputs * 1e-8)
    # Saved for backward (float32 here): the dropped-out input (4 bytes), the dropped positions' int64
    # indices (on a CPU: 8 bytes for 0.1 of the elements), and r = 4.
    assert estimate.memory_parts["branch_activations"] == int(
        128 * ((4 + 8 * 0.1) * inputs + 4 * LAYERS * 2 * 4)
    )
    without = estimate_job(
        spec_with(LORA, epochs=2), tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER
    )
    assert without.memory_parts["branch_activations"] == 128 * 4 * LAYERS * 2 * 4


def test_loras_evaluations_run_their_branches_in_the_reported_one_alone_on_a_cpu(tiny_bert_dir: Path) -> None:
    """tuning.folded_evaluation: on a CPU every evaluation but the last runs W + s·B·A folded."""
    spec = spec_with(LORA, epochs=3, mixed_precision="no")
    report = report_with(TRAIN_BATCHES, VALIDATION_BATCHES)
    evaluations, adapted = 1 + 3, LAYERS * 2
    layers = evaluations * 1e-3 * LAYERS  # one validation batch each time
    cpu = estimate_job(spec, tiny_bert_dir, report, worker=BRANCHY).seconds_parts
    assert cpu["evaluation_overhead"] == pytest.approx(layers + 1 * 1e-4 * adapted)
    cuda = estimate_job(spec, tiny_bert_dir, report, worker=replace(BRANCHY, device="cuda")).seconds_parts
    assert cuda["evaluation_overhead"] == pytest.approx(layers + evaluations * 1e-4 * adapted)


def test_folded_weights_count_where_they_outgrow_the_training_activations(tiny_bert_dir: Path) -> None:
    spec = spec_with(LORA, epochs=1)
    usual = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER).memory_parts
    assert "evaluation_folded_weights" not in usual  # 128 tokens' activations outweigh 4 small weights
    one_token = TRAIN_BATCHES | {"largest_tokens": 1, "largest_pairs": 1}
    parts = estimate_job(spec, tiny_bert_dir, report_with(one_token), worker=WORKER).memory_parts
    copies = 4 * LAYERS * 2 * HIDDEN * HIDDEN  # query and value, float32
    assert parts["evaluation_folded_weights"] == copies - parts["activations"] - parts["branch_activations"]
    assert parts["evaluation_folded_weights"] > 0


def test_a_head_fitted_as_a_probe_costs_one_forward_over_the_training_set(tiny_bert_dir: Path) -> None:
    random = spec_with({"type": "bitfit"}, epochs=1, batch_size=8)
    spec = random.model_copy(update={"head": random.head.model_copy(update={"initialization": "probe"})})
    parts = estimate_job(spec, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER).seconds_parts
    forward = LAYERS * (2 * LAYER_WEIGHTS / LAYERS * 240 + 4 * HIDDEN * 3000)  # the training set's tokens
    assert parts["head_probe"] == pytest.approx(forward / 1e9, rel=1e-9)
    assert parts["head_probe_overhead"] == pytest.approx(1 * LAYERS * 1e-3)  # 20 examples: one batch of 64
    assert (
        "head_probe"
        not in estimate_job(random, tiny_bert_dir, report_with(TRAIN_BATCHES), worker=WORKER).seconds_parts
    )
