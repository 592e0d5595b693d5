// A running job's events as they happen: the server-sent-events stream
// GET /v1/jobs/{id}/events/stream, read with fetch() because EventSource cannot send an Authorization
// header, or, where the stream is missing (404) or stays silent (a proxy that buffers it), polling
// GET /v1/jobs/{id}/events?after=<last id> every POLL_MS.

import { api, authHeaders, errorOf } from "./api.js";

export const POLL_MS = 2000;
const RECONNECT_MS = 1000;
const RETRY_AFTER_ERROR_MS = 3000;
// The stream sends keep-alive comments; nothing at all for this long means a proxy holds it back.
const STREAM_SILENCE_MS = 45000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export function isFinished(status) {
  return FINISHED.has(status);
}

// The text/event-stream format (the HTML standard's "event stream interpretation"), fed in chunks of
// any size: push() returns the messages completed so far, each {event, data, id}.
export class SseParser {
  constructor() {
    this.buffer = "";
    this.skipNewline = false; // a chunk that ended in "\r" may be half of a "\r\n"
    this.event = "";
    this.data = [];
    this.lastId = null;
    this.retry = null;
  }

  push(chunk) {
    if (chunk === "") {
      return [];
    }
    if (this.skipNewline && chunk.startsWith("\n")) {
      chunk = chunk.slice(1);
    }
    this.skipNewline = chunk.endsWith("\r");
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    const messages = [];
    for (const line of lines) {
      this.line(line, messages);
    }
    return messages;
  }

  line(line, messages) {
    if (line === "") {
      if (this.data.length) {
        messages.push({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) {
      return; // a comment: the server's keep-alive
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "event") {
      this.event = value;
    } else if (field === "data") {
      this.data.push(value);
    } else if (field === "id" && !value.includes("\0")) {
      this.lastId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) {
      this.retry = Number(value);
    }
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

// Follow job `jobId` from event `after` (the last id already shown, or null) until it finishes or
// `signal` aborts: onEvent(event) for each new event, onEnd(job) once at the end, onMode("stream" |
// "poll") when the way of following changes, onTrouble(error) when a try failed (it is retried).
export async function followJob(jobId, { after, signal, onEvent, onEnd, onMode, onTrouble }) {
  const state = { lastId: after, mode: "stream" };
  const seen = (event) => {
    if (state.lastId === null || event.id > state.lastId) {
      state.lastId = event.id;
      onEvent(event);
    }
  };
  onMode(state.mode);
  while (!signal.aborted) {
    let outcome;
    try {
      outcome = state.mode === "stream"
        ? await readStream(jobId, state, { signal, seen, onEnd })
        : await pollOnce(jobId, state, { signal, seen, onEnd });
    } catch (error) {
      if (signal.aborted) {
        return;
      }
      if (error.status === 404 || error.status === 401) {
        throw error; // the job is not ours to follow (any more): nothing to retry
      }
      onTrouble(error);
      await sleep(RETRY_AFTER_ERROR_MS, signal);
      continue;
    }
    if (outcome === "end") {
      return;
    }
    if (outcome === "unavailable" || outcome === "silent") {
      state.mode = "poll";
      onMode(state.mode);
    }
    await sleep(state.mode === "poll" ? POLL_MS : RECONNECT_MS, signal);
  }
}

// One connection to the stream: "end" after its final `end` message, "closed" when it closed before
// (reconnect with Last-Event-ID), "unavailable" when the server has no stream, "silent" when nothing
// came for STREAM_SILENCE_MS.
async function readStream(jobId, state, { signal, seen, onEnd }) {
  const connection = new AbortController();
  const stop = () => connection.abort();
  signal.addEventListener("abort", stop, { once: true });
  try {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (state.lastId !== null) {
      headers["Last-Event-ID"] = String(state.lastId);
    }
    const url = `/v1/jobs/${encodeURIComponent(jobId)}/events/stream`;
    const response = await fetch(url, { headers, signal: connection.signal, cache: "no-store" });
    if (!response.ok) {
      const error = await errorOf(response);
      if ((response.status === 404 && error.code !== "job_not_found") || response.status === 405) {
        return "unavailable"; // a server without the stream route
      }
      throw error;
    }
    if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      return "unavailable";
    }
    return await readMessages(response.body, connection, { seen, onEnd });
  } finally {
    signal.removeEventListener("abort", stop);
    connection.abort();
  }
}

async function readMessages(body, connection, { seen, onEnd }) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  let silent = false;
  let watchdog = null;
  const arm = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => { silent = true; connection.abort(); }, STREAM_SILENCE_MS);
  };
  arm();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return "closed";
      }
      arm();
      for (const message of parser.push(value)) {
        if (message.event === "end") {
          onEnd(JSON.parse(message.data));
          return "end";
        }
        seen(JSON.parse(message.data));
      }
    }
  } catch (error) {
    if (silent) {
      return "silent";
    }
    throw error;
  } finally {
    clearTimeout(watchdog);
  }
}

// One round of polling: the job first, then every event after the last one; "end" when the job had
// already finished when read (so its last events are among those just read).
async function pollOnce(jobId, state, { signal, seen, onEnd }) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const job = await api(path, { signal });
  for (;;) {
    const after = state.lastId === null ? "" : `&after=${state.lastId}`;
    const page = await api(`${path}/events?limit=100${after}`, { signal });
    page.data.forEach(seen);
    if (!page.has_more || page.data.length === 0) {
      break;
    }
  }
  if (isFinished(job.status)) {
    onEnd(job);
    return "end";
  }
  return "polled";
}
