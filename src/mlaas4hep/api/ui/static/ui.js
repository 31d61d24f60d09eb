// mlaas4hep web UI: small progressive enhancements (live refresh, validate as you type,
// dataset upload). Every page works without this file, except the upload form.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const ACTIVE = ["queued", "running"];

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
    return r.json();
  }

  function fmtNumber(v) {
    return typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v);
  }

  // ---- jobs list: refresh the rows while a job is queued or running ----
  function liveRows(table) {
    const body = table.tBodies[0];
    const active = () => ACTIVE.some((s) => body.querySelector(`tr[data-state="${s}"]`));
    async function tick() {
      if (!active()) return;
      try {
        const r = await fetch(table.dataset.liveRows, { credentials: "same-origin" });
        if (r.ok) body.innerHTML = await r.text();
      } catch (e) { /* try again next tick */ }
      setTimeout(tick, 2000);
    }
    setTimeout(tick, 2000);
  }

  // ---- job page: state, progress, ETA, metrics, log tail ----
  function progressHTML(job) {
    const p = job.progress || {};
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", `${job.name}: progress`);
    let text = p.phase || (job.state === "running" ? "starting" : "");
    if (job.state === "succeeded") { bar.max = 1; bar.value = 1; text = "done"; }
    else if (p.total) { bar.max = p.total; bar.value = p.events || 0; }
    else if (p.epochs) { bar.max = p.epochs; bar.value = p.epoch || 0; }
    else if (job.state !== "running") { bar.hidden = true; }
    if (p.epochs && job.state !== "succeeded") text += ` · epoch ${p.epoch || 0}/${p.epochs}`;
    const span = document.createElement("span");
    span.textContent = " " + text;
    return [bar, span];
  }

  function liveJob(section) {
    const $ = (id) => document.getElementById(id);
    async function tick() {
      let job;
      try { job = await getJSON(section.dataset.statusUrl); } catch (e) { setTimeout(tick, 2000); return; }
      const state = $("job-state");
      state.textContent = job.state;
      state.className = `state state-${job.state}`;
      $("job-progress").replaceChildren(...progressHTML(job));
      section.dispatchEvent(new CustomEvent("job-status", { detail: job }));  // live charts
      $("job-eta").textContent = job.eta_text;
      $("job-phase").textContent = (job.progress && job.progress.phase) || "–";
      const m = (job.progress && job.progress.metrics) || {};
      $("job-metrics").textContent = Object.keys(m).length
        ? Object.entries(m).map(([k, v]) => `${k} ${fmtNumber(v)}`).join(", ") : "–";
      const log = $("job-log");
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent = job.log_tail;
      if (atEnd) log.scrollTop = log.scrollHeight;
      if (job.terminal) { window.location.reload(); return; }
      setTimeout(tick, 1000);
    }
    setTimeout(tick, 1000);
  }

  // ---- submit page: validate as you type (the API's 422 message) ----
  function validateAsYouType(area) {
    const status = document.getElementById(area.getAttribute("aria-describedby"));
    let timer = null;
    let seq = 0;
    async function check() {
      const mine = ++seq;
      const r = await fetch(area.dataset.validateUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "text/plain", Accept: "application/json", "X-CSRF-Token": csrf() },
        body: area.value,
      });
      const answer = await r.json();
      if (mine !== seq) return;  // a newer keystroke is being checked
      status.textContent = answer.ok ? `✓ ${answer.detail}` : (answer.detail || answer.error);
      status.classList.toggle("bad", !answer.ok);
      status.classList.toggle("good", !!answer.ok);
      area.setAttribute("aria-invalid", answer.ok ? "false" : "true");
    }
    area.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 400); });
    if (area.value.trim()) check();
  }

  // ---- datasets page: stream the file as the request body ----
  function uploadForm(form) {
    const status = document.getElementById("upload-status");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const file = form.querySelector('input[type="file"]').files[0];
      if (!file) return;
      status.textContent = `Uploading ${file.name}…`;
      const url = `${form.dataset.uploadUrl}?name=${encodeURIComponent(file.name)}`;
      const r = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/octet-stream", Accept: "application/json", "X-CSRF-Token": csrf() },
        body: file,
      });
      const answer = await r.json();
      if (r.ok) { status.textContent = `Uploaded ${answer.name}.`; window.location.reload(); }
      else { status.textContent = answer.error || "upload failed"; status.classList.add("bad"); }
    });
  }

  // ---- login page: the local sign-in button names the user typed ----
  function signInAs(button) {
    const field = document.getElementById(button.dataset.signInAs);
    const label = () => { button.textContent = `Sign in as ${field.value.trim() || "…"}`; };
    field.addEventListener("input", label);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("table[data-live-rows]").forEach(liveRows);
    const live = document.getElementById("live");
    if (live && live.dataset.terminal === "false") liveJob(live);
    document.querySelectorAll("textarea[data-validate-url]").forEach(validateAsYouType);
    const up = document.getElementById("upload-form");
    if (up) uploadForm(up);
    document.querySelectorAll("button[data-sign-in-as]").forEach(signInAs);
  });
})();
