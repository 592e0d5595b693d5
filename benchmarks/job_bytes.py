"""What one LoRA job on all-MiniLM-L6-v2 writes to storage: its artifact and each resume point, in bytes.

    .venv/bin/python -m benchmarks.job_bytes                      # r=8 on query,value and on q,k,v,dense
    .venv/bin/python -m benchmarks.job_bytes --r 16

docs/scaling.md turns these into object-store traffic. Each configuration is a real `tuning.run` of a
few steps (16 short examples, batch 4, 1 epoch) with a resume point after every 2 steps, the worker's
setting scaled down; the sizes do not depend on the number of steps or examples, only on the model,
the method and the optimizer's state. Printed: trainable parameters, the artifact's files and total
bytes, and the resume point's files and total bytes (the largest point written).
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from tests.faults.harness import sentiment_lines
from tuning import JobSpec, run
from tuning.events import Event
from tuning.resume import ResumeOptions, ResumePoint

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TARGETS = {"query,value": ["query", "value"], "query,key,value,dense": ["query", "key", "value", "dense"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--r", type=int, default=8, help="LoRA rank")
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="deltatune-job-bytes-") as scratch:
        root = Path(scratch)
        training = root / "train.jsonl"
        training.write_text("\n".join(sentiment_lines(16, seed=1, words=12)) + "\n")
        for name, targets in TARGETS.items():
            results.append(measure(root / name.replace(",", "-"), training, targets, options.r))
    for result in results:
        print(
            f"LoRA r={result['r']} on {result['targets']}: {result['trainable_parameters']:,} trainable "
            f"parameters; artifact {result['artifact_bytes']:,} bytes in {len(result['artifact_files'])} "
            f"files; resume point {result['resume_point_bytes']:,} bytes in "
            f"{len(result['resume_point_files'])} files"
        )
    print(json.dumps(results))


def measure(folder: Path, training: Path, targets: list[str], r: int) -> dict[str, Any]:
    spec = JobSpec.model_validate(
        {
            "base_model": MODEL,
            "training_file": "train",
            "method": {"type": "lora", "r": r, "alpha": 2 * r, "target_modules": targets},
            "hyperparameters": {"epochs": 1, "batch_size": 4, "logging_steps": 1, "max_seq_length": 64},
        }
    )
    points: list[dict[str, int]] = []
    trainable: list[int] = []

    def on_point(point: ResumePoint) -> None:
        points.append(sizes(point.folder))

    def on_event(event: Event) -> None:
        if "trainable_parameters" in event.data:
            trainable.append(int(event.data["trainable_parameters"]))

    out = folder / "out"
    run(
        spec,
        out,
        training_path=training,
        on_event=on_event,
        resume=ResumeOptions(every_steps=2, on_resume_point=on_point),
    )
    artifact = sizes(out)
    largest = max(points, key=lambda files: sum(files.values())) if points else {}
    return {
        "r": r,
        "targets": ",".join(targets),
        "trainable_parameters": trainable[0] if trainable else None,
        "artifact_bytes": sum(artifact.values()),
        "artifact_files": artifact,
        "resume_points": len(points),
        "resume_point_bytes": sum(largest.values()),
        "resume_point_files": largest,
    }


def sizes(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


if __name__ == "__main__":
    main()
