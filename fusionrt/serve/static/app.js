// fusionrt web page: post the two images to /v1/swap, show the result and per-stage timings
// (read from the Server-Timing header the API sends with every swap).
"use strict";

const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// "detect;dur=12.3, swap;dur=4.5" -> [["detect", 12.3], ["swap", 4.5]]
function parseServerTiming(header) {
  return (header || "").split(",").map((part) => {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return [name, dur ? parseFloat(dur.slice(4)) : NaN];
  }).filter(([name]) => name);
}

function showTimings(rows) {
  const body = $("timings").querySelector("tbody");
  body.replaceChildren();
  let total = 0;
  for (const [name, ms] of rows) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td>${ms.toFixed(1)}</td>`;
    tr.firstChild.textContent = name;
    body.appendChild(tr);
    total += ms;
  }
  const tr = document.createElement("tr");
  tr.innerHTML = `<th>total</th><th>${total.toFixed(1)}</th>`;
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

$("swap-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  form.append("source", $("source").files[0]);
  form.append("target", $("target").files[0]);
  form.append("format", "jpeg");
  $("go").disabled = true;
  setStatus("swapping…", false);
  try {
    const r = await fetch("/v1/swap", { method: "POST", body: form });
    if (!r.ok) {
      const j = await r.json().catch(() => ({ error: r.statusText }));
      setStatus(`error ${r.status}: ${j.error}`, true);
      return;
    }
    const img = $("result");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(await r.blob());
    img.style.display = "block";
    showTimings(parseServerTiming(r.headers.get("Server-Timing")));
    setStatus(`${r.headers.get("X-Faces-Swapped")} face(s) swapped by ` +
              `${r.headers.get("X-Model-Version")}`, false);
  } catch (e) {
    setStatus(`error: ${e}`, true);
  } finally {
    $("go").disabled = false;
  }
});

refreshVersion();
