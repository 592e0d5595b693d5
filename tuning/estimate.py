"""What a job would cost, estimated before it runs from the validation report and the base model's files.

Imports no torch: the API answers a dry run with it. It models what the trainer does (tuning.train),
on a worker described by its measured figures (`Worker`: what the queue's workers measured at their
start, tuning.machine, or the settings DELTATUNE_WORKER_*: service/worker_figures.py); no earlier job
calibrates it.
How each figure is made (also returned as text):

- hyperparameters: "auto" learning rate and epochs resolved as training resolves them (tuning.auto),
  from the training file's batches; the estimate reports the numbers and why.
- steps = epochs × batches; batches = ceil(examples / batch_size), or with packing
  ceil(packed sequences / batch_size). Early stopping can only make it fewer.
- tokens = Σ min(tokens, max_seq_length) over the training file × epochs (packing: Σ tokens).
- batch shapes: each batch pads to its longest example, so the cost follows its padded tokens
  t = batch × width and attention pairs p = batch × width², from the report's `batches` (the trainer's
  grouping by length, or a shuffled order; evaluations length-sorted; packing: every width
  max_seq_length). Prompt tuning's virtual tokens widen every batch; prefix tuning's lengthen only
  attention's keys (p grows by virtual × t).
- parameters P: the sum of the tensor shapes in the base model's safetensors headers; trainable T from
  the method's registered estimate (full: all; LoRA r·(in+out) per targeted weight; BitFit the biases;
  adapters, prompts and prefixes from their sizes; partial last_n_layers its share of the layers) plus
  a classifier's new head (its model family's: BERT's classifier, RoBERTa's dense and out_proj,
  DistilBERT's pre_classifier and classifier, a decoder's bias-free score; an MLP head's two layers;
  a pooler the checkpoint lacks), as many outputs as the training file has labels (1 for regression).
- FLOPs, per batch (L layers of width h, M the 2-D weights inside them, Mℓ = M/L): a layer's forward
  2·Mℓ·t + 4·h·p (attention's scores and mix), its backward 2·Mℓ·t + 8·h·p for the activations' gradient,
  plus 2·min(T, M)·t for the weight gradients (a method that adds tensors also runs them forward:
  2·T·t). The forward runs every layer but those a frozen prefix caches; the backward runs from the top
  down to the method's lowest trained layer (a linear probe: none). A causal LM adds its output
  projection (vocabulary × h): 2·V·h·t forward and again backward. Embedding lookups cost nothing.
- frozen prefix (hyperparameters.frozen_layers, tuning.frozen_prefix): with reuse (auto: a sequence
  classifier, an encoder, no kl, 2 epochs or more, at least one frozen layer), the frozen layers run
  once over the training and validation examples, then every step starts above them.
- seconds = training FLOPs / the worker's FLOP/s in the training precision (bf16 under
  mixed_precision auto on a worker with native bf16, or bf16; else float32), + evaluations' forward
  FLOPs at the training's FLOP/s too, but for the last, the one the job reports, at float32's (one
  before the first step, then every eval_steps or each epoch's end, and one at the end unless the
  last step had one), + fixed costs: each layer's forward ops cost the worker's layer_seconds per
  batch (backward twice that: launching kernels and Python, which dominate small batches), and each
  step's optimizer update T / its parameters per second. What `train_seconds` measures: model
  loading and export are not in it.
- branches (the registry's `branches`: LoRA's low-rank branch beside each adapted weight): each costs
  the worker's branch_seconds per batch forward (twice that backward; in evaluations forward only),
  whatever the batch: its two small matmuls, scaling and add are few FLOPs but as many operations as a
  small layer's; with dropout, each branch's input runs through it, t·in elements a batch, at the
  worker's dropout_seconds per element (what dropout adds to a branch's forward and backward as the
  method runs it: on a CPU only the dropped positions drawn, tuning.methods.lora.dropped_down). On a
  CPU every evaluation but the reported one runs folded, W + s·B·A in one weight, with no branches
  (tuning.folded_evaluation); their copies, 4 bytes per adapted weight element, count where they
  outgrow the training's activations, which are freed by then.
  Their memory: per token of the largest batch, each branch keeps its own copy of its input (2
  bytes·in under bf16 autocast, which casts every user's input anew; float32 makes one only with
  dropout, 4 bytes), its dropout mask (on a CPU the dropped positions' indices, 8·p bytes·in; 1
  byte·in on CUDA), and its r inner activations.
- peak memory bytes = what the job's process holds at its peak: on a CPU worker its resident memory
  (the libraries' baseline, measured on the worker, + everything below); on CUDA the tensors alone.
  Weights 4·P (on CUDA, a method that trains only new tensors keeps the frozen base in bf16: 2·P) and
  4·each new tensor; on a CPU the checkpoint file's mapped pages, 4·P; gradients 4·T, AdamW's two
  moments 8·T and its foreach step's two intermediates 8·T (SGD: the gradients alone); bf16 autocast's cached
  16-bit copies of the layers' weights 2·M; a frozen prefix's cached outputs 4·h per example token;
  activations saved for backward in the largest batch, per layer that backward runs through,
  Korthikanti et al. 2022 (arXiv:2205.05198): 34·t·h + 5·heads·p bytes for 16-bit activations, twice
  that in float32; with gradient checkpointing only each such layer's input (2 or 4 bytes·t·h) plus
  one layer's full set while it is recomputed; a causal LM's logits 12·t·V.
- processes (resources.processes, tuning.distribution), N of them: time is the slowest process's, which
  trains ceil(batch/N) of each batch's rows (its t and p that share of the batch's); on a CPU worker the
  processes divide its cores (torchrun gives each one thread), so each runs at 1/N of the worker's FLOP/s
  and optimizer rate (on CUDA each has its own GPU); the fixed per-layer costs each process pays in
  parallel; every process evaluates the whole validation file; and each step exchanges the float32
  gradients at the worker's exchange bytes per second: a ring all-reduce (DDP) sends 2·(N−1)/N·4·T
  bytes from each process, `full` under FSDP gathers the weights for the forward and the backward and
  reduce-scatters the gradients, 3·(N−1)/N·4·T. Memory is one process's: its share's activations; under
  DDP the whole model plus a bucket copy of the gradients (4·T); under FSDP (`full`) 1/N of the weights,
  gradients and optimizer state, plus the rest of the weights of what is gathered during a step (all
  but the layers, and one layer).
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tuning.auto import resolve, trained_with
from tuning.methods import method_entry
from tuning.methods.base_model import ModelShapes
from tuning.methods.lora.options import SPARSE_DROPOUT_UP_TO
from tuning.methods.registry import Branches
from tuning.models import tensor_shapes
from tuning.parts.head_start import PROBE_BATCH, starts_from_probe
from tuning.parts.pooling import resolve_pooling
from tuning.spec import JobSpec

METHOD_TEXT = " ".join(
    line.strip() for line in (__doc__ or "").split("How each figure is made", 1)[1].splitlines()[1:]
)
KORTHIKANTI_BYTES_PER_HIDDEN = 34  # 16-bit activations saved per token and hidden unit in one layer
KORTHIKANTI_BYTES_PER_HEAD_PAIR = 5  # ... and per attention head and token pair
MIN_EPOCHS_TO_REUSE = 2  # tuning.frozen_prefix.MIN_EPOCHS_TO_PAY
BUFFERS = ("position_ids",)  # tensor names a checkpoint may hold that are no parameters
ADAMW_TEMPORARIES = 8  # bytes per trained parameter: the foreach step's two float32 intermediates


@dataclass(frozen=True)
class Worker:
    """The machine a job would run on, as measured there (published by its workers, or the settings
    DELTATUNE_WORKER_*)."""

    device: Literal["cpu", "cuda"] = "cpu"
    float32_flops: float = 3.0e11  # FLOP/s sustained in a transformer layer's forward and backward
    bf16_flops: float = 0.0  # ... in bf16; 0: no native bf16, so mixed_precision auto trains float32
    layer_seconds: float = 0.0  # fixed cost of one layer's forward ops on one batch (launches, Python)
    branch_seconds: float = 0.0  # ... of one low-rank branch's forward ops (LoRA's A, B, scale, add)
    dropout_seconds: float = 0.0  # dropout on one float32 activation, forward and backward
    optimizer_parameters_per_second: float = math.inf  # AdamW updates per second, clipping included
    exchange_bytes_per_second: float = math.inf  # a gradient all-reduce between two of a job's processes
    baseline_bytes: int = 0  # resident memory of the libraries before a model loads (CPU)
    memory_bytes: int | None = None  # what one job may use on this worker class; None: unknown

    def training_flops(self, mixed_precision: str) -> tuple[float, bool]:
        """FLOP/s of training's forward and backward, and whether it runs under bf16 autocast."""
        bf16 = mixed_precision == "bf16" or (
            mixed_precision == "auto" and (self.device == "cuda" or self.bf16_flops > 0)
        )
        return (self.bf16_flops or self.float32_flops) if bf16 else self.float32_flops, bf16


@dataclass(frozen=True)
class Estimate:
    steps: int
    tokens: int
    parameters: int
    trainable_parameters: int
    seconds: float
    peak_memory_bytes: int
    method: str = METHOD_TEXT
    seconds_parts: Mapping[str, float] = field(default_factory=dict)  # what the seconds are made of
    memory_parts: Mapping[str, int] = field(default_factory=dict)  # what the peak is made of
    # The hyperparameters training would use, "auto" resolved (tuning.auto), and why for those that were.
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    auto_reasons: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shapes:
    """Batch shapes of one pass over a file: batches, padded tokens, attention pairs, the largest."""

    count: int
    tokens: float
    pairs: float
    largest_tokens: float
    largest_pairs: float

    def scaled(self, share: float) -> "Shapes":
        """One process's part of every batch: `share` of its rows (the same width)."""
        if share == 1:
            return self
        return Shapes(
            self.count,
            self.tokens * share,
            self.pairs * share,
            self.largest_tokens * share,
            self.largest_pairs * share,
        )

    def widened(self, virtual: int, examples: int, *, keys_only: bool = False) -> "Shapes":
        """The same batches with `virtual` tokens in front of every example: as layer inputs (prompt
        tuning), or `keys_only` as attention keys and values (prefix tuning: each real token's query
        meets `virtual` more keys)."""
        if virtual == 0:
            return self
        if keys_only:
            return replace(
                self,
                pairs=self.pairs + virtual * self.tokens,
                largest_pairs=self.largest_pairs + virtual * self.largest_tokens,
            )
        width = self.largest_pairs / max(self.largest_tokens, 1)  # the largest batch's: p / t
        rows = self.largest_tokens / max(width, 1)
        return Shapes(
            self.count,
            self.tokens + virtual * examples,
            self.pairs + 2 * virtual * self.tokens + virtual**2 * examples,
            self.largest_tokens + virtual * rows,
            rows * (width + virtual) ** 2,
        )


@dataclass(frozen=True)
class Processes:
    """How a job's processes (resources.processes, tuning.distribution) split its work."""

    count: int
    share: float  # the largest process's part of a full batch: ceil(batch / count) / batch
    sharded: bool  # `full` under FSDP: weights, gradients and optimizer state 1/count in each process
    cpu: bool  # on a CPU worker the processes share its cores

    @property
    def slowdown(self) -> int:
        """How many times slower a process's arithmetic runs than the machine's figures: on a CPU the
        processes (one thread each under torchrun) divide its cores, on CUDA each has its own GPU."""
        return self.count if self.cpu else 1

    def exchanged_bytes(self, trainable: int) -> float:
        """Bytes each process sends per step: a ring all-reduce of the float32 gradients (DDP) moves
        2·(N−1)/N of them; FSDP gathers the weights for the forward and again for the backward and
        reduce-scatters the gradients, (N−1)/N each."""
        if self.count == 1:
            return 0.0
        return (3 if self.sharded else 2) * (self.count - 1) / self.count * 4 * trainable


def processes_of(spec: JobSpec, device: str) -> Processes:
    count = spec.resources.processes
    batch = spec.hyperparameters.batch_size
    return Processes(
        count=count,
        share=math.ceil(batch / count) / batch,
        sharded=spec.method.type == "full" and count > 1,
        cpu=device == "cpu",
    )


@dataclass(frozen=True)
class Model:
    """What the cost formulas read of the base model, and where its training starts and runs."""

    layers: int
    hidden: int
    heads: int
    layer_weights: int  # M
    vocabulary_projection: int  # V·h for a causal LM's output layer, else 0
    lowest: int  # the lowest trained layer
    cached: int  # layers a frozen prefix runs once, not every step

    def forward(self, shapes: Shapes, layers: int) -> float:
        per_layer = (
            2 * self.layer_weights / max(self.layers, 1) * shapes.tokens + 4 * self.hidden * shapes.pairs
        )
        return layers * per_layer + 2 * self.vocabulary_projection * shapes.tokens

    def backward(self, shapes: Shapes, trainable: int) -> float:
        per_layer = (
            2 * self.layer_weights / max(self.layers, 1) * shapes.tokens + 8 * self.hidden * shapes.pairs
        )
        weights = 2 * min(trainable, self.layer_weights) * shapes.tokens
        return (
            (self.layers - self.lowest) * per_layer + 2 * self.vocabulary_projection * shapes.tokens + weights
        )


def count_parameters(model_dir: Path) -> int:
    """The base model's parameter count, without loading it: the sum of its tensors' sizes."""
    return sum(math.prod(shape) for shape in parameter_shapes(model_dir).values())


def parameter_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """The checkpoint's tensors but the buffers older checkpoints store beside the weights (BERT's
    `position_ids`): what `model.parameters()` holds."""
    return {name: shape for name, shape in tensor_shapes(model_dir).items() if not name.endswith(BUFFERS)}


def estimate_job(spec: JobSpec, base_path: Path, report: Mapping[str, Any], *, worker: Worker) -> Estimate:
    """The dry run's figures for `spec` on the files `report` (tuning.validation) describes."""
    training = report["files"]["training_file"]
    validation = report["files"].get("validation_file")
    train_shapes = _training_shapes(spec, training)
    auto = resolve(
        spec, examples=training["examples"], steps_per_epoch=train_shapes.count, base_path=base_path
    )
    spec, hp = auto.spec, auto.hyperparameters
    trained_tokens = training.get("trained_tokens", training["examples"] * hp.max_seq_length)
    steps = hp.epochs * train_shapes.count
    shapes = ModelShapes(_job_tensors(spec, base_path), _config(base_path))
    parameters = shapes.total()
    trainable = trainable_parameters(spec, shapes.tensors, shapes.config, outputs=_outputs(spec, training))
    entry = method_entry(spec.method.type)
    virtual = entry.virtual_tokens(spec.method)
    keys_only = entry.virtual_keys_only
    train_shapes = train_shapes.widened(virtual, training["examples"], keys_only=keys_only)
    val_shapes = _evaluation_shapes(spec, validation, virtual, keys_only)
    model = _model(spec, shapes, train_shapes, trained_tokens, validation)
    processes = processes_of(spec, worker.device)
    branches = entry.branches(spec.method, shapes)
    seconds_parts = _seconds(
        spec, model, worker, trainable, train_shapes, val_shapes, steps, processes, branches
    )
    if starts_from_probe(spec):  # the head fitted first (tuning.parts.probe_head)
        seconds_parts |= _probe_seconds(
            model, worker, train_shapes, hp.batch_size, hp.mixed_precision, processes
        )
    head = (
        head_parameters(spec, shapes, _outputs(spec, training))
        if spec.task == "sequence_classification"
        else 0
    )
    memory_parts = _memory(
        spec, model, worker, parameters, trainable, head, train_shapes, trained_tokens, validation, processes
    )
    if branches.modules:
        memory_parts["branch_activations"] = _branch_bytes(
            spec, model, worker, branches, train_shapes.scaled(processes.share)
        )
    if folds(worker, processes, branches):  # what outgrows the training's activations, freed by then
        beyond = 4 * branches.weights - memory_parts["activations"] - memory_parts["branch_activations"]
        if beyond > 0:
            memory_parts["evaluation_folded_weights"] = beyond
    return Estimate(
        steps,
        trained_tokens * hp.epochs,
        parameters,
        trainable,
        sum(seconds_parts.values()),
        int(sum(memory_parts.values())),
        seconds_parts=seconds_parts,
        memory_parts=memory_parts,
        hyperparameters=_chosen(auto.hyperparameters.model_dump(), auto.head_learning_rate)
        | ({"head.pooling": spec.head.pooling} if "head.pooling" in auto.reasons else {}),
        auto_reasons=dict(auto.reasons),
    )


def _job_tensors(spec: JobSpec, base_path: Path) -> dict[str, tuple[int, ...]]:
    """The checkpoint's parameters the job's model holds: a mean-pooled classifier has no pooler."""
    tensors = parameter_shapes(base_path)
    if spec.task != "sequence_classification" or resolve_pooling(spec.head.pooling, base_path)[0] != "mean":
        return tensors
    return {name: shape for name, shape in tensors.items() if ".pooler." not in f".{name}"}


def _chosen(values: dict[str, Any], head_learning_rate: float | None) -> dict[str, Any]:
    return values if head_learning_rate is None else values | {"head_learning_rate": head_learning_rate}


def _training_shapes(spec: JobSpec, training: Mapping[str, Any]) -> Shapes:
    hp = spec.hyperparameters
    if spec.data.packing:
        sequences = training.get(
            "packed_sequences", math.ceil(training.get("trained_tokens", 0) / hp.max_seq_length)
        )
        return _full_width(sequences, hp.batch_size, hp.max_seq_length)
    batches = training.get("batches")
    if batches is None:  # no token statistics: every example max_seq_length wide, an upper bound
        return _full_width(training["examples"], hp.batch_size, hp.max_seq_length)
    return _shapes(batches)


def _evaluation_shapes(
    spec: JobSpec, validation: Mapping[str, Any] | None, virtual: int, keys_only: bool
) -> Shapes | None:
    if validation is None:
        return None
    hp = spec.hyperparameters
    batches = validation.get("batches")
    shapes = (
        _shapes(batches)
        if batches is not None and not spec.data.packing
        else _full_width(validation["examples"], hp.batch_size, hp.max_seq_length)
    )
    return shapes.widened(virtual, validation["examples"], keys_only=keys_only)


def _shapes(batches: Mapping[str, Any]) -> Shapes:
    return Shapes(
        batches["count"],
        batches["padded_tokens"],
        batches["token_pairs"],
        batches["largest_tokens"],
        batches["largest_pairs"],
    )


def _full_width(sequences: int, batch_size: int, width: int) -> Shapes:
    largest = min(sequences, batch_size) * width
    return Shapes(
        math.ceil(sequences / batch_size), sequences * width, sequences * width**2, largest, largest * width
    )


def _model(
    spec: JobSpec,
    shapes: ModelShapes,
    train_shapes: Shapes,
    trained_tokens: int,
    validation: Mapping[str, Any] | None,
) -> Model:
    layers = shapes.layers
    # Gradual unfreezing's last stage trains down to the bottom: the costliest stage's backward.
    lowest = (
        0
        if spec.gradual_unfreeze is not None
        else method_entry(spec.method.type).lowest_layer(spec.method, shapes)
    )
    lowest = min(lowest, layers)
    model = Model(
        layers=layers,
        hidden=shapes.hidden,
        heads=shapes.dimension("num_attention_heads", "n_head"),
        layer_weights=shapes.layer_weights(),
        vocabulary_projection=shapes.dimension("vocab_size") * shapes.hidden
        if spec.task == "causal_lm"
        else 0,
        lowest=lowest,
        cached=0,
    )
    return (
        replace(model, cached=lowest)
        if _reuses_frozen_prefix(spec, shapes, lowest, trained_tokens, validation)
        else model
    )


def _reuses_frozen_prefix(
    spec: JobSpec, shapes: ModelShapes, lowest: int, trained_tokens: int, validation: Mapping[str, Any] | None
) -> bool:
    """Whether tuning.frozen_prefix caches the layers below `lowest` (its `auto` rules, and the size cap)."""
    hp = trained_with(spec)
    if spec.task != "sequence_classification" or lowest < 1 or spec.gradual_unfreeze is not None:
        return False
    if str(shapes.config.get("model_type", "")) in LAST_TOKEN_SCORE:
        return False  # it cuts encoders only
    tokens = trained_tokens + (validation or {}).get("trained_tokens", 0)
    if 4 * shapes.hidden * tokens > hp.frozen_outputs_max_mb * 2**20:
        return False
    if hp.frozen_layers == "reuse":
        return True
    return hp.frozen_layers == "auto" and spec.regularizers.kl is None and hp.epochs >= MIN_EPOCHS_TO_REUSE


def _seconds(
    spec: JobSpec,
    model: Model,
    worker: Worker,
    trainable: int,
    train: Shapes,
    validation: Shapes | None,
    steps: int,
    processes: Processes,
    branches: Branches,
) -> dict[str, float]:
    hp = trained_with(spec)
    training_rate, _ = worker.training_flops(hp.mixed_precision)
    # Each process trains its share of every batch at its part of the machine (all of it alone).
    slowdown = processes.slowdown
    flops = training_rate / slowdown
    share = train.scaled(processes.share)
    running = model.layers - model.cached
    backward_layers = model.layers - model.lowest
    added = trainable if method_entry(spec.method.type).frozen_base(spec.method) else 0
    step_flops = model.forward(share, running) + model.backward(share, trainable) + 2 * added * share.tokens
    stepped = trainable / processes.count if processes.sharded else trainable
    parts = {
        "training": hp.epochs * step_flops / flops,
        "training_overhead": steps * worker.layer_seconds * (running + 2 * backward_layers)
        + steps * stepped * slowdown / worker.optimizer_parameters_per_second,
    }
    if branches.modules:  # their small ops, forward and backward (twice the forward's), each step
        parts["branch_overhead"] = steps * 3 * branches.modules * worker.branch_seconds
    if branches.dropout:  # a mask drawn and applied per element of each branch's input, both ways
        parts["branch_dropout"] = (
            hp.epochs * share.tokens * branches.inputs * slowdown * worker.dropout_seconds
        )
    if processes.count > 1:
        parts["gradient_exchange"] = (
            steps * processes.exchanged_bytes(trainable) / worker.exchange_bytes_per_second
        )
    if validation is not None:  # every process evaluates the whole validation file
        evaluations = _evaluations(spec, steps, train.count)
        # All but the one the job reports run in the training's precision; that one in float32.
        parts["evaluation"] = (
            model.forward(validation, running)
            * slowdown
            * ((evaluations - 1) / training_rate + 1 / worker.float32_flops)
        )
        # Folded, an evaluation runs no branches (tuning.folded_evaluation); the reported one does.
        unfolded = 1 if folds(worker, processes, branches) else evaluations
        parts["evaluation_overhead"] = validation.count * (
            evaluations * worker.layer_seconds * running + unfolded * worker.branch_seconds * branches.modules
        )
    if model.cached:
        both = train if validation is None else _sum(train, validation)
        parts["frozen_prefix"] = model.forward(both, model.cached) / flops
        parts["frozen_prefix_overhead"] = both.count * worker.layer_seconds * model.cached
    return parts


def folds(worker: Worker, processes: Processes, branches: Branches) -> bool:
    """Whether the job's evaluations before its last step run folded (tuning.folded_evaluation)."""
    return worker.device == "cpu" and not processes.sharded and branches.modules > 0


def _probe_seconds(
    model: Model, worker: Worker, train: Shapes, batch_size: int, mixed_precision: str, processes: Processes
) -> dict[str, float]:
    """The head's probe: one forward over the training set in the training's precision, in batches of
    PROBE_BATCH examples (about the training batches' tokens and pairs, in fewer batches); every process
    runs the whole of it."""
    rate, _ = worker.training_flops(mixed_precision)
    batches = math.ceil(train.count * batch_size / PROBE_BATCH)
    return {
        "head_probe": model.forward(train, model.layers) * processes.slowdown / rate,
        "head_probe_overhead": batches * worker.layer_seconds * model.layers,
    }


def _evaluations(spec: JobSpec, steps: int, per_epoch: int) -> int:
    """Before the first step, then each epoch's end or every eval_steps, and at the end if not on one."""
    every = spec.hyperparameters.eval_steps
    if every is None:
        return 1 + trained_with(spec).epochs
    return 1 + steps // every + (1 if steps % every else 0)


def _sum(a: Shapes, b: Shapes) -> Shapes:
    return Shapes(a.count + b.count, a.tokens + b.tokens, a.pairs + b.pairs, 0, 0)


def _memory(
    spec: JobSpec,
    model: Model,
    worker: Worker,
    parameters: int,
    trainable: int,
    head: int,
    train: Shapes,
    trained_tokens: int,
    validation: Mapping[str, Any] | None,
    processes: Processes,
) -> dict[str, int]:
    hp = spec.hyperparameters
    _, bf16 = worker.training_flops(hp.mixed_precision)
    frozen_base = method_entry(spec.method.type).frozen_base(spec.method)
    base_bytes = 2 if bf16_base(worker.device, frozen_base, hp.mixed_precision) else 4
    new = trainable if frozen_base else head  # the new tensors: all it trains, or the new head alone
    # One process's: FSDP keeps 1/N of every weight, gradient and moment; DDP the whole of them.
    held = 1 / processes.count if processes.sharded else 1
    parts = {
        "baseline": worker.baseline_bytes if worker.device == "cpu" else 0,
        "weights": int(held * (base_bytes * parameters + 4 * new)),
        "gradients_and_optimizer": int(
            held * (12 + ADAMW_TEMPORARIES if hp.optimizer == "adamw" else 4) * trainable
        ),
        "activations": _activation_bytes(spec, model, train.scaled(processes.share), bf16),
    }
    if processes.sharded:  # the root's weights stay gathered through a step, and one layer's at a time
        outside = parameters - model.layer_weights
        parts["gathered_weights"] = int(
            4 * (1 - held) * (outside + model.layer_weights / max(model.layers, 1))
        )
    elif processes.count > 1:  # DDP's buckets: a copy of the gradients, all-reduced as they fill
        parts["gradient_buckets"] = 4 * trainable
    if worker.device == "cpu":  # the checkpoint file is mapped, and its pages stay resident once read
        parts["checkpoint_pages"] = 4 * parameters
    if bf16 and base_bytes == 4:
        parts["bf16_weight_copies"] = 2 * model.layer_weights
    if model.cached:
        parts["frozen_prefix_cache"] = (
            4 * model.hidden * (trained_tokens + (validation or {}).get("trained_tokens", 0))
        )
    return parts


def _dropout_mask_bytes(device: str, dropout: float) -> float:
    """Per element of a branch's input: a byte on CUDA; on a CPU the dropped positions' int64 indices
    (tuning.methods.lora.dropped_down) up to SPARSE_DROPOUT_UP_TO, above it torch's float32 mask."""
    if not dropout:
        return 0
    if device != "cpu":
        return 1
    return 8 * dropout if dropout <= SPARSE_DROPOUT_UP_TO else 4


def _branch_bytes(spec: JobSpec, model: Model, worker: Worker, branches: Branches, train: Shapes) -> int:
    """What the branches save for backward in the largest batch, per token: their own copy of their
    input (16-bit under bf16 autocast, which casts each user's input anew; in float32 only dropout makes
    a new one), their dropout's mask (_dropout_mask_bytes), and
    the inner r activations. With gradient checkpointing, one layer's branches at a time."""
    _, bf16 = worker.training_flops(spec.hyperparameters.mixed_precision)
    copy = 2 if bf16 else (4 if branches.dropout else 0)
    mask = _dropout_mask_bytes(worker.device, branches.dropout)
    per_token = (copy + mask) * branches.inputs + (2 if bf16 else 4) * branches.ranks
    saved = train.largest_tokens * per_token
    if spec.hyperparameters.gradient_checkpointing:
        saved /= max(model.layers, 1)
    return int(saved)


def bf16_base(device: str, frozen_base: bool, mixed_precision: str) -> bool:
    """Whether the job keeps its frozen base weights in bf16: on CUDA, for a method that trains only new
    tensors, unless mixed_precision is "no" (tuning.fit applies the same rule)."""
    return device == "cuda" and frozen_base and mixed_precision != "no"


def _activation_bytes(spec: JobSpec, model: Model, train: Shapes, bf16: bool) -> int:
    """Activations of the largest batch saved for backward, in the layers backward runs through."""
    layers = model.layers - model.lowest
    if layers <= 0:
        return 0
    scale = 1 if bf16 else 2  # Korthikanti counts 16-bit values; float32 doubles them
    per_layer = scale * (
        KORTHIKANTI_BYTES_PER_HIDDEN * train.largest_tokens * model.hidden
        + KORTHIKANTI_BYTES_PER_HEAD_PAIR * model.heads * train.largest_pairs
    )
    if spec.hyperparameters.gradient_checkpointing:
        saved = layers * 2 * scale * train.largest_tokens * model.hidden + per_layer
    else:
        saved = layers * per_layer
    logits = 12 * train.largest_tokens * model.vocabulary_projection / max(model.hidden, 1)
    return int(saved + logits)


def trainable_parameters(
    spec: JobSpec, shapes: Mapping[str, tuple[int, ...]], config: Mapping[str, Any], *, outputs: int
) -> int:
    """How many parameters the job trains, as its `training started` event counts them: the method's
    registered estimate (tuning/methods/<type>/__init__.py), at most the base's size, plus a
    classifier's head with `outputs` outputs (`head_parameters`; none for causal_lm)."""
    model = ModelShapes(shapes, config)
    method = min(method_entry(spec.method.type).estimate(spec.method, model), model.total())
    return method + (head_parameters(spec, model, outputs) if spec.task == "sequence_classification" else 0)


# Sequence-classification heads of transformers' model classes, by config.json's model_type: what
# AutoModelForSequenceClassification adds to a backbone checkpoint (tuning.task_model trains it all).
DENSE_THEN_OUT = frozenset(  # a dense h→h layer, then out_proj (DeBERTa: its pooler, then classifier)
    {"roberta", "xlm-roberta", "camembert", "electra", "mpnet", "longformer", "data2vec-text", "deberta"}
    | {"deberta-v2", "xlm-roberta-xl", "roberta-prelayernorm"}
)
PRE_CLASSIFIER = frozenset({"distilbert"})  # pre_classifier h→h, then classifier
# BERT-like: the pooler (pretrained unless the checkpoint lacks it), then classifier.
POOLED = frozenset({"bert", "albert", "ernie", "megatron-bert", "roc_bert", "nezha"})
LAST_TOKEN_SCORE = frozenset(  # decoders: a bias-free `score` on the last real token's state
    {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3", "phi", "phi3"}
    | {"gemma", "gemma2", "falcon", "bloom", "starcoder2", "olmo", "stablelm", "persimmon", "biogpt"}
)


def head_parameters(spec: JobSpec, shapes: ModelShapes, outputs: int) -> int:
    """Parameters of the new classification head, from the model family and the spec's head."""
    hidden, model_type = shapes.hidden, str(shapes.config.get("model_type", ""))
    bias = model_type not in LAST_TOKEN_SCORE
    before = 0  # what comes before the layer that produces the logits, and stays an MLP head too
    if model_type in DENSE_THEN_OUT | PRE_CLASSIFIER:
        before = hidden * hidden + hidden
    elif model_type in POOLED and not any(".pooler." in f".{name}" for name in shapes.tensors):
        # A pooler the checkpoint lacks is initialised, so trained; mean pooling has none.
        before = 0 if spec.head.pooling == "mean" else hidden * hidden + hidden
    if spec.head.type == "mlp":
        width = spec.head.hidden_size or hidden
        logits = hidden * width + width + width * outputs + (outputs if bias else 0)
    else:
        logits = hidden * outputs + (outputs if bias else 0)
    return before + logits


def _outputs(spec: JobSpec, training: Mapping[str, Any]) -> int:
    """The head's outputs: one per label of the training file, one for a regression target."""
    if spec.problem_type == "regression" or training.get("format") == "regression":
        return 1
    return max(len(training.get("labels", {})), 1)


def _config(base_path: Path) -> dict[str, Any]:
    path = base_path / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
