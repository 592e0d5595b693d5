"""Events the training loop emits while it runs; the worker stores them as job events."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["message", "metrics", "eval"]


@dataclass(frozen=True)
class Event:
    type: EventType
    message: str
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]
StopCheck = Callable[[], bool]


def ignore_event(event: Event) -> None:
    """Default sink for callers that don't watch progress."""


def never_stop() -> bool:
    return False
