"""`deltatune jobs watch`: a job's live event stream as a progress bar, until the job ends.

The bar shows the step out of the total, the latest training loss, the latest evaluation and the
time left (the steps left at the rate of the steps so far, the server's own estimate); messages and
status changes print above it. When the connection drops, the watch reconnects and resumes after the
last event it showed (`Last-Event-ID`), so nothing is shown twice or missed. On a console that is
not a terminal (a CI log, a pipe), every event is one plain line instead of a redrawn bar.
"""

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from service.client.api import DeltatuneClient, RequestRefused, ServerUnreachable

SUCCEEDED = "succeeded"
# A dropped stream is retried with growing pauses (1, 2, 4, then 5 s) this many times in a row.
RECONNECTS = 12
TRANSIENT_STATUSES = (502, 503, 504)  # a proxy or a server restarting, or the database unavailable


def watch_job(
    client: DeltatuneClient, job_id: str, console: Console, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Show the job's events live until it ends; returns the ended job object."""
    job = client.get_job(job_id)  # an unknown id fails here, before any bar is drawn
    view = WatchView(console, job)
    last_id: int | None = None
    failures = 0
    with view:
        while True:
            try:
                with client.job_events(job_id, last_event_id=last_id) as events:
                    failures = 0
                    for event in events:
                        if event.event == "end":
                            ended: dict[str, Any] = json.loads(event.data)
                            view.ended(ended)
                            return ended
                        view.show(json.loads(event.data))
                        if event.id is not None:
                            last_id = int(event.id)
                reason = "the server closed the stream"
            except ServerUnreachable as error:
                reason = str(error)
            except RequestRefused as error:
                if error.status not in TRANSIENT_STATUSES:
                    raise
                reason = error.message
            failures += 1
            if failures > RECONNECTS:
                raise ServerUnreachable(
                    f"gave up watching job {job_id} after {RECONNECTS} reconnects: {reason}"
                )
            pause = min(2.0 ** (failures - 1), 5.0)
            view.note(f"[yellow]{reason}; reconnecting in {pause:g} s[/]")
            sleep(pause)


class WatchView:
    """The bar and the lines above it; plain lines only on a console that is not a terminal."""

    def __init__(self, console: Console, job: dict[str, Any]) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[status]:<9}"),
            BarColumn(),
            TextColumn("{task.fields[step]}"),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[eval]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            disable=not self.live,
        )
        self.task: TaskID = self.progress.add_task(
            job["id"], total=None, status=job["status"], step="", loss="", eval="", eta=""
        )
        self.elapsed = ""  # the job's training time at its latest logging step
        console.print(f"watching job {job['id']}: {job['method']['type']} on {job['base_model']}")

    def __enter__(self) -> "WatchView":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, event: dict[str, Any]) -> None:
        data, kind = event.get("data") or {}, event.get("type")
        if kind == "metrics":
            self._metrics(data)
        elif kind == "eval":
            self._eval(data)
        elif kind == "status":
            self.progress.update(self.task, status=data.get("status", ""))
        if kind != "metrics" or not self.live:  # the bar shows the metrics; a log needs the line
            self.note(f"[dim]{_clock(event.get('created_at'))}[/] {_escape(event.get('message', ''))}")

    def note(self, text: str) -> None:
        self.console.print(text)  # above the bar while it is live

    def ended(self, job: dict[str, Any]) -> None:
        status = job["status"]
        self.progress.update(self.task, status=status, eta=self.elapsed)
        if status == SUCCEEDED:
            self.progress.update(self.task, completed=self.progress.tasks[0].total or 1)
        self.progress.stop()
        self.console.print(outcome(job))

    def _metrics(self, data: dict[str, Any]) -> None:
        step, total = data.get("step"), data.get("total_steps")
        if isinstance(step, int) and isinstance(total, int):
            self.progress.update(self.task, completed=step, total=total, step=f"step {step}/{total}")
            elapsed = data.get("elapsed_seconds")
            if isinstance(elapsed, int | float) and step > 0:
                # The job's own clock, not the watch's: a watch started late still shows the truth.
                left = (total - step) * elapsed / step
                self.elapsed = f"{_duration(elapsed)} elapsed"
                self.progress.update(self.task, eta=f"{self.elapsed}, {_duration(left)} left")
        loss = data.get("train_loss")
        self.progress.update(
            self.task, loss=f"loss {loss:.4f}" if isinstance(loss, int | float) else "loss -"
        )

    def _eval(self, data: dict[str, Any]) -> None:
        shown = [
            f"{name.removeprefix('val_')} {value:.4g}"
            for name, value in data.items()
            if name.startswith("val_") and isinstance(value, int | float)
        ]
        self.progress.update(self.task, eval="val " + ", ".join(shown) if shown else "")


def outcome(job: dict[str, Any]) -> str:
    """One line: how the job ended, and the figures a user looks at first."""
    status, metrics = job["status"], job.get("metrics") or {}
    if status == SUCCEEDED:
        figures = [f"{len(job.get('artifacts') or [])} artifact files"]
        for name, value in sorted(metrics.items()):
            if name.startswith("val_") and isinstance(value, int | float):
                before = metrics.get(f"initial_{name}")
                was = f" (before: {before:.4g})" if isinstance(before, int | float) else ""
                figures.append(f"{name} {value:.4g}{was}")
        if isinstance(metrics.get("train_seconds"), int | float):
            figures.append(f"trained in {_duration(metrics['train_seconds'])}")
        return f"[green]job {job['id']} succeeded[/]: " + "; ".join(figures)
    error = job.get("error") or {}
    if status == "failed":
        code = f" ({error['code']})" if error.get("code") else ""
        param = f" [param: {error['param']}]" if error.get("param") else ""
        return f"[red]job {job['id']} failed{code}[/]: {_escape(error.get('message', ''))}{_escape(param)}"
    return f"[yellow]job {job['id']} {status}[/]"


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _clock(created_at: Any) -> str:
    return datetime.fromtimestamp(created_at).strftime("%H:%M:%S") if isinstance(created_at, int) else ""


def _escape(text: str) -> str:
    """A server's text shown as it is: square brackets are rich markup otherwise."""
    return escape(text)
