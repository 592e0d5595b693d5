"""Server-sent events read from a stream's lines, as the HTML standard's EventSource parses them.

Only what deltatune's stream sends needs to work, but the parsing follows the standard (fields
`event`, `data` on one or more lines, `id`, comments ignored, a blank line ends an event), so the
client reads any conforming server's stream.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str  # "message" when the server names no type, as EventSource does
    data: str
    id: str | None  # the last id the stream set, carried forward as EventSource does


def read_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:  # an event without data (a keep-alive comment) is not dispatched
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
