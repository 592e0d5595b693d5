"""deltatune's PyTorch method core: `tuning.run(spec, out_dir, ...)` trains a job and writes its delta.

Importing `tuning` stays cheap (no torch): the API imports `tuning.models`, `tuning.data` and
`tuning.spec`; torch and transformers load when `run` or `load_artifact` is first called.
"""

from typing import TYPE_CHECKING, Any

from tuning.errors import Cancelled, DataError, ModelNotFound, ResumeMismatch, SpecError, TuningError
from tuning.events import Event, EventSink, StopCheck, ignore_event, never_stop
from tuning.resume import ResumeOptions, ResumePoint, ResumePointSink
from tuning.run import RunResult, run
from tuning.spec import JobSpec

if TYPE_CHECKING:
    from tuning.artifacts.load import LoadedArtifact, load_artifact, predict_logits

__all__ = [
    "Cancelled",
    "DataError",
    "Event",
    "EventSink",
    "JobSpec",
    "LoadedArtifact",
    "ModelNotFound",
    "ResumeMismatch",
    "ResumeOptions",
    "ResumePoint",
    "ResumePointSink",
    "RunResult",
    "SpecError",
    "StopCheck",
    "TuningError",
    "ignore_event",
    "load_artifact",
    "never_stop",
    "predict_logits",
    "run",
]

_ARTIFACT_NAMES = ("LoadedArtifact", "load_artifact", "predict_logits")


def __getattr__(name: str) -> Any:
    # `tuning.load_artifact` imports torch only when someone asks for it.
    if name in _ARTIFACT_NAMES:
        from tuning.artifacts import load as artifact

        return getattr(artifact, name)
    raise AttributeError(f"module 'tuning' has no attribute {name!r}")
