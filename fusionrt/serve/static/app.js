// fusionrt web page. Images: post source + target to /v1/swap, show the result and per-stage
// timings (from the Server-Timing header the API sends with every swap). Videos: make an
// identity of the source (/v1/identities), queue a job (/v1/jobs), poll it for progress, then
// offer the result; a running job can be cancelled (DELETE /v1/jobs/{id}).
// Plain JS, no inline code: the page's Content-Security-Policy allows only this file.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;        // job progress: twice a second is smooth and costs nothing
const DONE = ["succeeded", "failed", "cancelled"];

let job = null;             // the job this page follows: {id, timer}
let identity = null;        // {file, id}: the source photo already sent to /v1/identities

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// Whatever an earlier run showed: gone before a new run, and when an error is shown.
function clearResults() {
  const img = $("result");
  if (img.src) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.style.display = "none";
  $("timings").hidden = true;
  $("timings").querySelector("tbody").replaceChildren();
  $("download").hidden = true;
  $("download").removeAttribute("href");
  $("progress").hidden = true;
}

function showError(text) {
  clearResults();
  setStatus(text, true);
}

// The API answers errors as {"error": "...", "request_id": "..."}.
async function apiError(r) {
  const j = await r.json().catch(() => ({ error: r.statusText }));
  return `error ${r.status}: ${j.error}`;
}

// "detect;dur=12.3, swap;dur=4.5" -> [["detect", 12.3], ["swap", 4.5]]
function parseServerTiming(header) {
  return (header || "").split(",").map((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return [name, dur ? parseFloat(dur.slice(4)) : NaN];
  }).filter(([name]) => name);
}

function cell(tag, text) {
  const td = document.createElement(tag);
  td.textContent = text;
  return td;
}

function showTimings(rows) {
  const body = $("timings").querySelector("tbody");
  body.replaceChildren();
  let total = 0;
  for (const [name, ms] of rows) {
    const tr = document.createElement("tr");
    tr.append(cell("td", name), cell("td", ms.toFixed(1)));
    body.appendChild(tr);
    total += ms;
  }
  const tr = document.createElement("tr");
  tr.append(cell("th", "total"), cell("th", total.toFixed(1)));
  body.appendChild(tr);
  $("timings").hidden = false;
}

async function refreshVersion() {
  try {
    const r = await fetch("/readyz");
    const j = await r.json();
    $("version").textContent = r.ok ? `model: ${j.version}` : `model: ${j.status}`;
  } catch (e) {
    $("version").textContent = "model: unreachable";
  }
}

// -- images -----------------------------------------------------------------------------
$("swap-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const source = $("source").files[0], target = $("target").files[0];
  if (!source || !target) {
    showError("choose a source photo and a target image first");
    return;
  }
  const form = new FormData();
  form.append("source", source);
  form.append("target", target);
  form.append("format", $("format").value);
  $("go").disabled = true;
  clearResults();
  setStatus("swapping…", false);
  try {
    const r = await fetch("/v1/swap", { method: "POST", body: form });
    if (!r.ok) {
      showError(await apiError(r));
      return;
    }
    const img = $("result");
    img.src = URL.createObjectURL(await r.blob());
    img.style.display = "block";
    showTimings(parseServerTiming(r.headers.get("Server-Timing")));
    setStatus(`${r.headers.get("X-Faces-Swapped")} face(s) swapped by ` +
              `${r.headers.get("X-Model-Version")}`, false);
  } catch (e) {
    showError(`error: ${e}`);
  } finally {
    $("go").disabled = false;
  }
});

// -- videos -----------------------------------------------------------------------------
class ApiFailure extends Error {}

async function identityOf(file) {
  if (identity && identity.file === file) return identity.id;
  const form = new FormData();
  form.append("image", file);
  const r = await fetch("/v1/identities", { method: "POST", body: form });
  if (!r.ok) throw new ApiFailure(await apiError(r));
  identity = { file, id: (await r.json()).id };
  return identity.id;
}

async function submitJob(source, video) {
  for (let attempt = 0; ; attempt++) {
    const form = new FormData();
    form.append("video", video);
    form.append("identity_id", await identityOf(source));
    form.append("crf", $("crf").value || "18");
    const r = await fetch("/v1/jobs", { method: "POST", body: form });
    if (r.ok) return r.json();
    if (r.status === 404 && attempt === 0) {  // identity forgotten (server restart): redo it
      identity = null;
      continue;
    }
    throw new ApiFailure(await apiError(r));
  }
}

function setJobRunning(running) {
  $("video-go").disabled = running;
  $("cancel").hidden = !running;
  $("cancel").disabled = false;
}

function showJob(j) {
  const p = $("progress");
  p.hidden = false;
  p.value = j.progress;
  const frames = `${j.frames_done} / ${j.frames_total} frames`;
  if (j.state === "succeeded") {
    $("download").href = j.result_url;
    $("download").download = `swapped-${j.id.slice(0, 8)}.mp4`;
    $("download").hidden = false;
    setStatus(`video done: ${frames} by ${j.version}`, false);
  } else if (j.state === "failed") {
    showError(`job failed: ${j.error}`);
  } else if (j.state === "cancelled") {
    clearResults();
    setStatus(`job cancelled after ${frames}`, false);
  } else {
    const pct = Math.round(100 * j.progress);
    setStatus(j.state === "queued" ? "video queued…" : `video running: ${frames} (${pct}%)`,
              false);
  }
  if (DONE.includes(j.state)) stopFollowing();
}

function stopFollowing() {
  if (job) clearTimeout(job.timer);
  job = null;
  setJobRunning(false);
}

async function poll() {
  if (!job) return;
  const id = job.id;
  try {
    const r = await fetch(`/v1/jobs/${id}`);
    if (!job || job.id !== id) return;  // cancelled or replaced meanwhile
    if (!r.ok) {
      showError(await apiError(r));
      stopFollowing();
      return;
    }
    showJob(await r.json());
  } catch (e) {
    setStatus(`server unreachable (${e}); still trying…`, true);
  }
  if (job && job.id === id) job.timer = setTimeout(poll, POLL_MS);
}

$("video-go").addEventListener("click", async () => {
  const source = $("source").files[0], video = $("video").files[0];
  if (!source || !video) {
    showError("choose a source photo and a video first");
    return;
  }
  setJobRunning(true);
  $("cancel").hidden = true;  // nothing to cancel until the server has accepted the job
  clearResults();
  setStatus("uploading the video…", false);
  try {
    const j = await submitJob(source, video);
    job = { id: j.id, timer: null };
    setJobRunning(true);
    showJob(j);
    if (job) job.timer = setTimeout(poll, POLL_MS);
  } catch (e) {
    showError(e instanceof ApiFailure ? e.message : `error: ${e}`);
    setJobRunning(false);
  }
});

$("cancel").addEventListener("click", async () => {
  if (!job) return;
  const id = job.id;
  $("cancel").disabled = true;
  setStatus("cancelling…", false);
  try {
    const r = await fetch(`/v1/jobs/${id}`, { method: "DELETE" });
    if (!r.ok) {
      showError(await apiError(r));
      stopFollowing();
      return;
    }
    const j = await r.json();
    if (DONE.includes(j.state)) {
      clearTimeout(job.timer);
      showJob(j);
    }  // 202: still stopping; the next poll shows "cancelled"
  } catch (e) {
    showError(`error: ${e}`);
    $("cancel").disabled = false;
  }
});

refreshVersion();
