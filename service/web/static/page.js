// The page: the owner's jobs (refreshed every JOBS_REFRESH_MS), one job's curves, events and
// artifacts (followed live, see live.js), and a form that uploads data and starts a job.
// Everything the server sends is put in the page as text (textContent), never as HTML.

import { ApiError, api, apiKey, authHeaders, errorOf, forgetKey, listAll, rememberKey, uploadFile } from "./api.js";
import { StepChart } from "./charts.js";
import { followJob, isFinished } from "./live.js";

const JOBS_REFRESH_MS = 3000;
const JOB_REFRESH_MS = 2000; // the summary of a followed job, at most this often
const SHOWN_EVENTS = 500;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node[name] = value;
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");
// One decimal below 10%: a long job's first steps still show it moving.
const percent = (fraction) => `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0)}%`;

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function statusBadge(status) {
  return el("span", { className: `status status-${status}`, textContent: status });
}

function notice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

function explain(error) {
  return error instanceof ApiError ? error.describe() : `cannot reach the server (${error.message})`;
}

// --- the API key -----------------------------------------------------------------------------------

function showKeyState() {
  const known = Boolean(apiKey());
  $("key-status").textContent = known ? "key saved in this browser" : "";
  $("key-forget").hidden = !known;
  $("key-input").value = "";
  $("key-input").placeholder = known ? "replace the key…" : "dt-…";
}

async function useKey(key) {
  rememberKey(key);
  showKeyState();
  await refreshJobs();
  await loadFileChoices();
  await loadAutoRates();
  if (openJobId !== null) {
    openJob(openJobId); // opened before there was a key to read it with
  }
}

// --- the jobs list -----------------------------------------------------------------------------------

let jobsTimer = null;

async function refreshJobs() {
  clearTimeout(jobsTimer);
  if (!apiKey()) {
    notice("Enter an API key (`deltatune keys create`, or .deltatune/api-key for `make run`).");
    return;
  }
  try {
    const page = await api("/v1/jobs?limit=50");
    renderJobs(page.data, page.has_more);
    notice("");
  } catch (error) {
    notice(error.status === 401 ? `API key refused: ${error.message}` : explain(error));
    if (error.status === 401) {
      return; // no point retrying a refused key every few seconds
    }
  }
  jobsTimer = setTimeout(refreshJobs, JOBS_REFRESH_MS);
}

let shownJobs = "";

function renderJobs(jobs, hasMore) {
  $("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  // Rebuilt only when something shown changed: no flicker, and a row being clicked stays in place.
  const shown = JSON.stringify([openJobId, hasMore, jobs.map((job) => [job.id, job.status, job.progress])]);
  if (shown === shownJobs) {
    return;
  }
  shownJobs = shown;
  const rows = jobs.map((job) =>
    el(
      "tr",
      { dataset: { jobId: job.id, status: job.status }, className: job.id === openJobId ? "selected" : "" },
      el("td", {}, el("a", { href: `#job/${encodeURIComponent(job.id)}`, textContent: job.id })),
      el("td", {}, statusBadge(job.status)),
      el("td", { textContent: job.method.type }),
      el("td", { textContent: job.base_model }),
      el("td", {}, el("progress", { max: 1, value: job.progress }), ` ${percent(job.progress)}`),
      el("td", { textContent: when(job.created_at) }),
    ),
  );
  document.querySelector("#jobs-table tbody").replaceChildren(...rows);
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs-more").hidden = !hasMore;
}

// --- one job -----------------------------------------------------------------------------------------

let openJobId = null;
let following = null; // the AbortController of the job being followed
const trainChart = new StepChart($("train-chart"));
// Validation metrics named like a loss share the left axis; accuracy, F1 and the like the right one.
const validationChart = new StepChart($("validation-chart"), {
  scaleOf: (name) => (/loss|perplexity|mse|mae/.test(name) ? "loss" : "score"),
});

function route() {
  const match = /^#job\/(.+)$/.exec(location.hash);
  const jobId = match ? decodeURIComponent(match[1]) : null;
  if (jobId !== openJobId) {
    openJob(jobId);
  }
}

async function openJob(jobId) {
  following?.abort();
  following = null;
  openJobId = jobId;
  $("job").hidden = jobId === null || !apiKey();
  document.querySelectorAll("#jobs-table tbody tr").forEach((row) => {
    row.className = row.dataset.jobId === jobId ? "selected" : "";
  });
  if (jobId === null || !apiKey()) {
    return;
  }
  const controller = new AbortController();
  following = controller;
  const { signal } = controller;
  $("job-id").textContent = jobId;
  $("events").replaceChildren();
  $("job-live").textContent = "";
  trainChart.clear();
  validationChart.clear();
  renderArtifacts(null);
  try {
    const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
    renderJob(job);
    const history = await listAll(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { signal });
    if (signal.aborted) {
      return; // another job was opened meanwhile: these events are not its
    }
    history.forEach(showEvent);
    if (isFinished(job.status)) {
      await finish(job, signal);
      return;
    }
    await follow(jobId, history.length ? history[history.length - 1].id : null, signal);
  } catch (error) {
    if (!signal.aborted) {
      notice(`job ${jobId}: ${explain(error)}`);
    }
  }
}

async function follow(jobId, after, signal) {
  let lastRefresh = 0;
  const refreshJob = async () => {
    if (Date.now() - lastRefresh < JOB_REFRESH_MS) {
      return;
    }
    lastRefresh = Date.now();
    renderJob(await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal }));
  };
  let ended = null;
  await followJob(jobId, {
    after,
    signal,
    onEvent: (event) => {
      if (signal.aborted) {
        return;
      }
      showEvent(event);
      if (event.type !== "message") {
        refreshJob().catch(() => {}); // the next event tries again
      }
    },
    onEnd: (job) => { ended = job; },
    onMode: (mode) => {
      $("job-live").dataset.mode = mode;
      $("job-live").textContent = mode === "stream" ? "live" : "live (polling)";
    },
    onTrouble: (error) => notice(`following job ${jobId}: ${explain(error)}; retrying`),
  });
  if (ended !== null && !signal.aborted) {
    await finish(ended, signal);
  }
}

async function finish(job, signal) {
  renderJob(job);
  $("job-live").textContent = "";
  $("job-live").dataset.mode = "finished";
  if (job.status === "succeeded") {
    const listing = await api(`/v1/jobs/${encodeURIComponent(job.id)}/artifacts`, { signal });
    renderArtifacts(listing);
  }
}

function renderJob(job) {
  if (job.id !== openJobId) {
    return;
  }
  $("job-status").replaceChildren(statusBadge(job.status));
  $("job").dataset.status = job.status;
  $("job-progress").value = job.progress;
  $("job-progress-text").textContent = percent(job.progress);
  const facts = [
    ["method", job.method.type],
    ["base model", job.base_model],
    ["created", when(job.created_at)],
    ["finished", when(job.finished_at)],
    ["examples seen", String(job.examples_seen)],
    ...Object.entries(job.metrics)
      .filter(([, value]) => typeof value === "number")
      .map(([name, value]) => [name, Number.isInteger(value) ? String(value) : value.toPrecision(4)]),
  ].filter(([, value]) => value);
  $("job-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { textContent: name }), el("dd", { textContent: value })]));
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  $("job-cancel").hidden = isFinished(job.status) || job.cancel_requested;
}

function showEvent(event) {
  const data = event.data || {};
  if (event.type === "metrics") {
    trainChart.add(data.step, "train_loss", data.train_loss);
  } else if (event.type === "eval") {
    for (const [name, value] of Object.entries(data)) {
      if (name.startsWith("val_")) {
        validationChart.add(data.step, name, value);
      }
    }
  }
  const list = $("events");
  list.append(
    el(
      "li",
      { className: `event event-${event.type} level-${event.level}`, dataset: { eventId: String(event.id) } },
      el("time", { textContent: new Date(event.created_at * 1000).toLocaleTimeString() }),
      el("span", { className: "event-type", textContent: event.type }),
      el("span", { textContent: event.message }),
    ),
  );
  while (list.childElementCount > SHOWN_EVENTS) {
    list.firstElementChild.remove();
  }
  list.scrollTop = list.scrollHeight;
}

async function cancelOpenJob() {
  const jobId = openJobId;
  try {
    renderJob(await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" }));
    await refreshJobs();
  } catch (error) {
    notice(`cancel ${jobId}: ${explain(error)}`);
  }
}

// --- artifacts: downloaded with the key in a header, handed to the browser as a blob ------------------

function renderArtifacts(listing) {
  const files = listing ? listing.data : [];
  const rows = files.map((artifact) =>
    el(
      "tr",
      {},
      el("td", {}, el("a", {
        href: artifact.url,
        className: "download",
        textContent: artifact.name,
        dataset: { name: artifact.name, sha256: artifact.sha256 },
        onclick: (click) => { click.preventDefault(); download(artifact.url, artifact.name, artifact.sha256); },
      })),
      el("td", { textContent: bytes(artifact.bytes) }),
      el("td", {}, el("code", { title: artifact.sha256, textContent: `${artifact.sha256.slice(0, 12)}…` })),
    ),
  );
  document.querySelector("#artifacts tbody").replaceChildren(...rows);
  $("artifacts").hidden = files.length === 0;
  $("artifacts-none").hidden = files.length > 0;
  $("artifacts-archive").hidden = !listing || files.length === 0;
  $("download-status").textContent = "";
  if (listing) {
    $("archive-link").href = listing.archive_url;
    $("archive-link").onclick = (click) => {
      click.preventDefault();
      download(listing.archive_url, `${openJobId}.tar.gz`, null);
    };
  }
}

async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function download(url, name, sha256) {
  const status = $("download-status");
  status.textContent = `downloading ${name}…`;
  try {
    const response = await fetch(url, { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) {
      throw await errorOf(response);
    }
    const blob = await response.blob();
    // crypto.subtle exists only in a secure context (https, or a loopback address): check when it can.
    if (sha256 && globalThis.crypto?.subtle) {
      const actual = await sha256Hex(await blob.arrayBuffer());
      if (actual !== sha256) {
        status.textContent = `${name}: the download's sha256 ${actual} is not the listed ${sha256}; not saved`;
        return;
      }
    }
    const link = el("a", { href: URL.createObjectURL(blob), download: name.split("/").pop() });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    status.textContent = sha256 && globalThis.crypto?.subtle ? `${name}: saved, sha256 checked` : `${name}: saved`;
  } catch (error) {
    status.textContent = `${name}: ${explain(error)}`;
  }
}

// --- starting a job ------------------------------------------------------------------------------------

async function loadDefaultSpec() {
  const response = await fetch("/static/default-spec.json");
  $("spec").value = await response.text();
}

// What learning_rate "auto" trains each method at (GET /v1/methods), under the spec.
async function loadAutoRates() {
  if (!apiKey()) {
    return;
  }
  try {
    const listing = await api("/v1/methods");
    const rates = listing.data
      .filter((item) => item.kind === "method" && item.auto_learning_rate !== null)
      .map((item) => `${item.name} ${item.auto_learning_rate}`);
    $("auto-rates").textContent =
      `Leave out learning_rate and epochs for "auto": the epochs from the data's size, the rate from each method's paper at batch 16 (× √(batch_size/16)): ${rates.join(", ")}.`;
  } catch {
    // the hint as written still says what auto does
  }
}

async function loadFileChoices() {
  if (!apiKey()) {
    return;
  }
  try {
    const files = (await listAll("/v1/files")).filter((file) => file.status === "processed");
    for (const id of ["train-existing", "validation-existing"]) {
      const select = $(id);
      const chosen = select.value;
      select.replaceChildren(
        el("option", { value: "", textContent: "as in the spec" }),
        ...files.map((file) => el("option", { value: file.id, textContent: `${file.filename} (${file.examples} examples, ${file.id})` })),
      );
      select.value = chosen;
    }
  } catch {
    // the form still works with ids typed into the spec
  }
}

// The file for one spec field: a new upload, else one picked from the list, else the spec's own.
async function fileFor(uploadInput, select, label) {
  const [file] = uploadInput.files;
  if (file) {
    $("form-status").textContent = `uploading ${file.name}…`;
    try {
      return (await uploadFile(file)).id;
    } catch (error) {
      throw new Error(`${label} ${file.name}: ${explain(error)}`);
    }
  }
  return select.value || null;
}

async function submitJob(submit) {
  submit.preventDefault();
  const problem = $("form-error");
  problem.hidden = true;
  $("form-status").textContent = "";
  let spec;
  try {
    spec = JSON.parse($("spec").value);
  } catch (error) {
    problem.textContent = `spec: not valid JSON (${error.message})`;
    problem.hidden = false;
    return;
  }
  $("job-submit").disabled = true;
  try {
    const training = await fileFor($("train-upload"), $("train-existing"), "training file");
    const validation = await fileFor($("validation-upload"), $("validation-existing"), "validation file");
    if (training) spec.training_file = training;
    if (validation) spec.validation_file = validation;
    const job = await api("/v1/jobs", { method: "POST", json: spec });
    $("form-status").textContent = job.id ? `job ${job.id} queued` : "dry run: nothing queued";
    $("job-form").reset();
    await loadDefaultSpec();
    await refreshJobs();
    await loadFileChoices();
    if (job.id) {
      location.hash = `job/${encodeURIComponent(job.id)}`;
    }
  } catch (error) {
    problem.textContent = error instanceof ApiError ? error.describe() : error.message;
    problem.hidden = false;
    $("form-status").textContent = "";
  } finally {
    $("job-submit").disabled = false;
  }
}

// --- wiring ----------------------------------------------------------------------------------------------

$("key-form").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const key = $("key-input").value.trim();
  if (key) {
    useKey(key);
  }
});
$("key-forget").addEventListener("click", () => {
  forgetKey();
  showKeyState();
  openJob(null);
  document.querySelector("#jobs-table tbody").replaceChildren();
  shownJobs = "";
  refreshJobs();
});
$("job-cancel").addEventListener("click", cancelOpenJob);
$("job-form").addEventListener("submit", submitJob);
window.addEventListener("hashchange", route);

showKeyState();
loadDefaultSpec();
refreshJobs().then(loadFileChoices).then(loadAutoRates);
route();
