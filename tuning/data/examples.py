"""One example per JSONL line, in the six formats a training file may hold.

The format is the shape of the line: `{"text", "label"}` classification (a non-integer number makes
the file regression), `{"text", "labels": [...]}` multi-label, `{"text"}` language modelling,
`{"prompt", "completion"}` and `{"messages": [...]}` chat. Every line of a file has the first
line's format.
"""

from dataclasses import dataclass

Label = str | int

CHAT_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """Single-label classification."""

    text: str
    label: Label
    line: int


@dataclass(frozen=True)
class MultiLabelExample:
    text: str
    labels: tuple[Label, ...]  # possibly empty: none of the labels applies
    line: int


@dataclass(frozen=True)
class RegressionExample:
    text: str
    value: float
    line: int


@dataclass(frozen=True)
class TextExample:
    """Plain language modelling: the loss is on every token."""

    text: str
    line: int


@dataclass(frozen=True)
class PromptCompletionExample:
    """The loss is on the completion's tokens only."""

    prompt: str
    completion: str  # may be empty: it then trains nothing, and the report counts it
    line: int


@dataclass(frozen=True)
class Message:
    role: str  # one of CHAT_ROLES
    content: str


@dataclass(frozen=True)
class ChatExample:
    """Rendered with a chat template; the loss is on the assistant turns only."""

    messages: tuple[Message, ...]
    line: int


AnyExample = (
    Example | MultiLabelExample | RegressionExample | TextExample | PromptCompletionExample | ChatExample
)
