"""The page's live client (service/web/static/live.js) in Chromium, against scripted answers: its
event-stream parser on any split of a stream, and followJob on the stream contract (Last-Event-ID
on reconnect, `end` with the job) and on the polling fallback. No server: the browser's requests to
the made-up origin below are answered from the page's own files and the responses given here.
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from service.web import STATIC_DIR

ORIGIN = "http://page.test"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(10_000)

    def static(route: Route) -> None:
        name = route.request.url.removeprefix(f"{ORIGIN}/static/")
        route.fulfill(path=STATIC_DIR / name, content_type="text/javascript")

    context.route(f"{ORIGIN}/", lambda route: route.fulfill(body="<!doctype html><title>live</title>"))
    context.route(f"{ORIGIN}/static/*.js", static)
    opened = context.new_page()
    opened.goto(f"{ORIGIN}/")
    opened.evaluate("localStorage.setItem('deltatune.apiKey', 'dt-test-key')")
    yield opened
    context.close()


STREAM = (
    ": connected\r\n\r\n"
    'id: 7\r\nevent: metrics\r\ndata: {"id": 7, "type": "metrics",\r\ndata:  "data": {"step": 1}}\r\n\r\n'
    ": keep-alive\n\n"
    'id: 8\revent: eval\rdata: {"id": 8, "type": "eval", "data": {}}\r\r'
    'event: end\ndata: {"id": "job-1", "status": "succeeded"}\n\n'
    "data: never finished"
)
PARSED = [
    {"event": "metrics", "data": '{"id": 7, "type": "metrics",\n "data": {"step": 1}}', "id": "7"},
    {"event": "eval", "data": '{"id": 8, "type": "eval", "data": {}}', "id": "8"},
    {"event": "end", "data": '{"id": "job-1", "status": "succeeded"}', "id": "8"},
]


def test_the_parser_reads_the_same_messages_however_the_stream_is_split(page: Page) -> None:
    results = page.evaluate(
        """async (stream) => {
            const { SseParser } = await import("/static/live.js");
            const splits = [[stream]];
            for (let at = 1; at < stream.length; at++) splits.push([stream.slice(0, at), stream.slice(at)]);
            splits.push([...stream]);  // one character at a time
            return splits.map((chunks) => {
                const parser = new SseParser();
                return chunks.flatMap((chunk) => parser.push(chunk));
            });
        }""",
        STREAM,
    )
    assert len(results) == len(STREAM) + 1
    for messages in results:
        assert messages == PARSED


FOLLOW = """async ({ after, jobId }) => {
    const { followJob } = await import("/static/live.js");
    const seen = { events: [], end: null, modes: [], troubles: [] };
    await followJob(jobId, {
        after,
        signal: new AbortController().signal,
        onEvent: (event) => seen.events.push(event.id),
        onEnd: (job) => { seen.end = job; },
        onMode: (mode) => seen.modes.push(mode),
        onTrouble: (error) => seen.troubles.push(error.message),
    });
    return seen;
}"""


def sse(*messages: tuple[str, str, Any]) -> str:
    return "".join(
        f"id: {id_}\nevent: {event}\ndata: {json.dumps(data)}\n\n" for id_, event, data in messages
    )


def event(event_id: int, kind: str = "metrics") -> dict[str, Any]:
    return {"id": event_id, "type": kind, "message": "", "data": {}, "created_at": 0, "level": "info"}


def test_follow_reconnects_with_the_last_event_id_until_the_end(page: Page) -> None:
    requests: list[dict[str, str]] = []
    urls: list[str] = []
    answers = [
        sse(("3", "metrics", event(3)), ("4", "eval", event(4, "eval"))),  # closes before `end`
        ": keep-alive\n\n"
        + sse(("4", "eval", event(4, "eval")), ("5", "status", event(5, "status")))
        + sse(("5", "end", {"id": "job-1", "status": "succeeded"})),
    ]

    def stream(route: Route) -> None:
        requests.append(route.request.headers)
        urls.append(route.request.url)
        route.fulfill(body=answers[len(requests) - 1], content_type="text/event-stream")

    page.route(f"{ORIGIN}/v1/jobs/job-1/events/stream", stream)
    seen = page.evaluate(FOLLOW, {"after": 2, "jobId": "job-1"})
    assert seen == {
        "events": [3, 4, 5],
        "end": {"id": "job-1", "status": "succeeded"},
        "modes": ["stream"],
        "troubles": [],
    }
    assert [headers.get("last-event-id") for headers in requests] == ["2", "4"]
    assert all(headers["authorization"] == "Bearer dt-test-key" for headers in requests)
    assert urls == [f"{ORIGIN}/v1/jobs/job-1/events/stream"] * 2  # the key travels in the header only


def test_follow_polls_the_events_where_the_server_has_no_stream(page: Page) -> None:
    calls: list[str] = []
    not_found = {
        "error": {"message": "no route", "type": "not_found_error", "param": None, "code": "not_found"}
    }
    pages = {
        None: {"data": [event(1), event(2)], "has_more": True},
        "2": {"data": [event(3)], "has_more": False},
        "3": {"data": [], "has_more": False},
    }
    statuses = iter(["running", "succeeded"])

    def route(route: Route) -> None:
        url = route.request.url
        calls.append(url.removeprefix(ORIGIN))
        if url.endswith("/events/stream"):
            route.fulfill(status=404, json=not_found)
        elif "/events?" in url:
            after = dict(part.split("=") for part in url.split("?")[1].split("&")).get("after")
            route.fulfill(json=pages[after])
        else:
            route.fulfill(json={"id": "job-2", "status": next(statuses)})

    page.route(f"{ORIGIN}/v1/**", route)
    seen = page.evaluate(FOLLOW, {"after": None, "jobId": "job-2"})
    assert seen["events"] == [1, 2, 3]
    assert seen["end"] == {"id": "job-2", "status": "succeeded"}
    assert seen["modes"] == ["stream", "poll"]
    assert calls == [
        "/v1/jobs/job-2/events/stream",
        "/v1/jobs/job-2",
        "/v1/jobs/job-2/events?limit=100",
        "/v1/jobs/job-2/events?limit=100&after=2",
        "/v1/jobs/job-2",
        "/v1/jobs/job-2/events?limit=100&after=3",
    ]


def test_follow_gives_up_on_a_job_that_is_not_found(page: Page) -> None:
    missing = {
        "error": {
            "message": "no job with id 'job-3'",
            "type": "not_found_error",
            "param": "job_id",
            "code": "job_not_found",
        }
    }
    page.route(f"{ORIGIN}/v1/jobs/job-3/events/stream", lambda route: route.fulfill(status=404, json=missing))
    follow_or_fail = f"""async () => {{
        try {{ await ({FOLLOW})({{ after: null, jobId: "job-3" }}); return "followed"; }}
        catch (error) {{ return error.message; }}
    }}"""
    message = page.evaluate(follow_or_fail)
    assert message == "no job with id 'job-3'"
