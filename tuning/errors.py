"""Errors the method core raises for its callers to turn into a job's `error`."""


class TuningError(Exception):
    """Base: `code` and `param` travel to the job's error object."""

    code = "training_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class DataError(TuningError):
    """A data file cannot train the job; `line` is 1-based, None for whole-file problems."""

    code = "invalid_data"

    def __init__(self, message: str, *, line: int | None = None, param: str | None = None) -> None:
        located = f"line {line}: {message}" if line is not None else message
        super().__init__(located, param=param)
        self.line = line
        self.reason = message


class ModelNotFound(TuningError):
    code = "model_not_found"

    def __init__(self, name: str, known: list[str]) -> None:
        listing = ", ".join(known) if known else "none"
        super().__init__(f"unknown base model {name!r}; known models: {listing}", param="base_model")
        self.name = name
        self.known = known


class SpecError(TuningError):
    """The spec does not fit the model (e.g. no module matches target_modules)."""

    code = "invalid_spec"


class ResumeMismatch(TuningError):
    """A resume point that is not this job's (another spec, data, or base model), or not a resume point."""

    code = "resume_mismatch"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="resume_from")


class Cancelled(Exception):
    """Raised inside the training loop when should_stop() says so; nothing is published."""
