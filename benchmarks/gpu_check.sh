#!/usr/bin/env bash
# The GPU checks of the performance and scaling work, in one prepared run on a machine with an
# NVIDIA GPU (everything else in the project passes without one):
#
#   benchmarks/gpu_check.sh               # about 10 minutes on one GPU; prints every table
#   OUT=results benchmarks/gpu_check.sh   # also keeps each step's output under results/
#
# 1. the GPU, the driver and what torch sees;
# 2. a fixed-shape training step (benchmarks/step.py, --device cuda, bf16): LoRA, prompt and prefix
#    tuning on a classifier and a causal LM against PEFT: time, memory, deltatune's tokens per second
#    and model FLOPs utilisation against the GPU's dense bf16 peak;
# 3. the dry run's estimate against measured jobs (benchmarks/estimate.py): a LoRA job and a full
#    fine-tune of all-MiniLM-L6-v2, peak memory against `torch.cuda.max_memory_allocated`, time
#    against the job's `train_seconds`, with the machine's figures measured first;
# 4. a whole LoRA job against the PEFT + Trainer script (benchmarks/whole_job.py, one round; both
#    sides on the GPU, the Trainer with bf16=True as a GPU user writes it): wall time, accuracy,
#    evaluation throughput;
# 5. where there are several GPUs, the LoRA job and the full fine-tune on 1 and 2 processes (one GPU
#    each, nccl; benchmarks/processes.py): wall time, training tokens per second, accuracy.
#
# Python: $PYTHON, else the project's .venv (on a GPU host install torch's CUDA build, as the
# Dockerfile does, then the project: `pip install -e '.[dev]'`).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

step() {
    local name=$1
    shift
    echo
    echo "== $name: $*"
    local started=$SECONDS
    if [ -n "$OUT" ]; then
        mkdir -p "$OUT"
        "$@" 2>&1 | tee "$OUT/$name.txt"
    else
        "$@"
    fi
    echo "== $name took $((SECONDS - started)) s"
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check" >&2
    exit 2
fi

step gpu nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
step torch "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "devices", torch.cuda.device_count(), torch.cuda.get_device_name(0),
    "bf16", torch.cuda.is_bf16_supported())'
step training_step "$PYTHON" -m benchmarks.step --device cuda --precisions bf16 --steps 20 --warmup 3
step estimate "$PYTHON" -m benchmarks.estimate lora full
step whole_job "$PYTHON" -m benchmarks.whole_job --rounds 1
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    step processes_lora "$PYTHON" -m benchmarks.processes --method lora --processes 1 2
    step processes_full "$PYTHON" -m benchmarks.processes --method full --processes 1 2
else
    echo
    echo "== processes: one GPU here; the 2-GPU runs need a machine with two"
fi
