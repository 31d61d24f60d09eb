// mlaas4hep web UI: small interactive SVG line charts (no library, nothing from a CDN).
//
//   MLCharts.line(container, {series: [{name, points: [[x, y], ...], dash, colour}],
//                             xLabel, yLabel, logY, xMin, xMax, yMin, yMax, title, integerX})
//
// Hover shows the nearest point of each series; drag a rectangle to zoom; double-click (or
// the "Reset zoom" button) goes back; "log y" toggles a logarithmic y axis. Drawing uses
// SVG attributes only (the pages' CSP allows no inline style).
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 320, M = { l: 62, r: 16, t: 14, b: 44 };
  const COLOURS = ["#0b5cad", "#c4421a", "#116329", "#6f3fb0", "#8a6100", "#b3186b", "#1b7c8c", "#57606a"];

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  function fmt(v) {
    if (!Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function ticks(lo, hi, log) {
    if (log) {
      // Decades; 1-2-5 within them when the range spans less than two decades.
      for (const mantissas of [[1], [1, 2, 5], [1, 1.5, 2, 3, 5, 7]]) {
        const out = [];
        for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
          for (const m of mantissas) {
            const v = m * Math.pow(10, p);
            if (v >= lo * 0.999 && v <= hi * 1.001) out.push(Number(v.toPrecision(6)));
          }
        }
        if (out.length >= 3 || (out.length >= 2 && mantissas.length > 1)) return out;
      }
      return [lo, hi];
    }
    const span = hi - lo || 1;
    const step0 = Math.pow(10, Math.floor(Math.log10(span / 5)));
    const step = [1, 2, 5, 10].map((m) => m * step0).find((s) => span / s <= 6) || step0 * 10;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));  // no 3.5e-18 for 0
    }
    return out;
  }

  function extent(series, axis, log) {
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const p of s.points) {
      const v = p[axis];
      if (!Number.isFinite(v) || (log && v <= 0)) continue;
      lo = Math.min(lo, v); hi = Math.max(hi, v);
    }
    if (!Number.isFinite(lo)) return [log ? 1 : 0, log ? 10 : 1];
    if (lo === hi) { const d = log ? lo * 0.5 : Math.abs(lo) * 0.1 || 1; return [lo - (log ? d : d), hi + d]; }
    if (!log) { const pad = (hi - lo) * 0.04; return [lo - pad, hi + pad]; }
    return [lo, hi];
  }

  function line(container, opts) {
    const series = (opts.series || []).map((s, i) => ({ colour: COLOURS[i % COLOURS.length], ...s }))
      .filter((s) => s.points && s.points.length);
    const state = { logY: !!opts.logY, zoom: null };
    container.classList.add("chart");
    container.replaceChildren();
    const bar = document.createElement("div");
    bar.className = "chart-bar";
    const logBox = document.createElement("label");
    const logInput = document.createElement("input");
    logInput.type = "checkbox"; logInput.checked = state.logY;
    logBox.append(logInput, " log y");
    const reset = document.createElement("button");
    reset.type = "button"; reset.textContent = "Reset zoom"; reset.disabled = true;
    bar.append(logBox, reset);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg",
      "aria-label": opts.title || `${opts.yLabel || "y"} vs ${opts.xLabel || "x"}` });
    const tip = document.createElement("div");
    tip.className = "chart-tip"; tip.hidden = true; tip.setAttribute("role", "status");
    const legend = document.createElement("ul");
    legend.className = "chart-legend";
    for (const s of series) {
      const li = document.createElement("li");
      const sw = el("svg", { width: 22, height: 10, "aria-hidden": "true" });
      el("line", { x1: 0, y1: 5, x2: 22, y2: 5, stroke: s.colour, "stroke-width": 2.5,
        "stroke-dasharray": s.dash ? "5 3" : "none" }, sw);
      li.append(sw, " " + s.name);
      legend.appendChild(li);
    }
    container.append(bar, svg, tip, legend);
    if (!series.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, svg).textContent = "no data yet";
      return { update: (o) => line(container, { ...opts, ...o }) };
    }

    function draw() {
      svg.replaceChildren();
      const logY = state.logY;
      let [x0, x1] = state.zoom ? state.zoom.x : [opts.xMin ?? extent(series, 0, false)[0], opts.xMax ?? extent(series, 0, false)[1]];
      let [y0, y1] = state.zoom ? state.zoom.y : extent(series, 1, logY);
      if (!state.zoom && !logY) { if (opts.yMin !== undefined) y0 = opts.yMin; if (opts.yMax !== undefined) y1 = opts.yMax; }
      const fy = logY ? (v) => Math.log10(v) : (v) => v;
      const sx = (v) => M.l + ((v - x0) / (x1 - x0 || 1)) * (W - M.l - M.r);
      const sy = (v) => H - M.b - ((fy(v) - fy(y0)) / (fy(y1) - fy(y0) || 1)) * (H - M.t - M.b);
      const clipId = `clip-${Math.random().toString(36).slice(2)}`;
      const defs = el("defs", {}, svg);
      const clip = el("clipPath", { id: clipId }, defs);
      el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b }, clip);
      const axes = el("g", { class: "chart-axes" }, svg);
      for (const t of ticks(x0, x1, false).filter((v) => !opts.integerX || Number.isInteger(v))) {
        el("line", { x1: sx(t), x2: sx(t), y1: M.t, y2: H - M.b, class: "chart-grid" }, axes);
        el("text", { x: sx(t), y: H - M.b + 16, "text-anchor": "middle" }, axes).textContent = fmt(t);
      }
      for (const t of ticks(y0, y1, logY)) {
        el("line", { x1: M.l, x2: W - M.r, y1: sy(t), y2: sy(t), class: "chart-grid" }, axes);
        el("text", { x: M.l - 6, y: sy(t) + 4, "text-anchor": "end" }, axes).textContent = fmt(t);
      }
      el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "chart-frame" }, axes);
      el("text", { x: (M.l + W - M.r) / 2, y: H - 8, "text-anchor": "middle", class: "chart-label" }, axes).textContent = opts.xLabel || "";
      el("text", { x: 14, y: (M.t + H - M.b) / 2, "text-anchor": "middle", class: "chart-label",
        transform: `rotate(-90 14 ${(M.t + H - M.b) / 2})` }, axes).textContent = (opts.yLabel || "") + (logY ? " (log)" : "");
      const plot = el("g", { "clip-path": `url(#${clipId})` }, svg);
      for (const s of series) {
        const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logY || p[1] > 0));
        el("polyline", { points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
          fill: "none", stroke: s.colour, "stroke-width": 2, "stroke-dasharray": s.dash ? "6 4" : "none",
          "data-series": s.name }, plot);
        if (s.markers || pts.length <= 30) {
          for (const p of pts) el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.8, fill: s.colour }, plot);
        }
      }
      const cross = el("line", { y1: M.t, y2: H - M.b, class: "chart-cross", visibility: "hidden" }, svg);
      const band = el("rect", { class: "chart-band", visibility: "hidden", y: M.t, height: H - M.t - M.b }, svg);
      const overlay = el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "transparent", class: "chart-overlay" }, svg);
      const inv = (px, py) => {
        const x = x0 + ((px - M.l) / (W - M.l - M.r)) * (x1 - x0);
        const t = (H - M.b - py) / (H - M.t - M.b);
        const y = logY ? Math.pow(10, fy(y0) + t * (fy(y1) - fy(y0))) : y0 + t * (y1 - y0);
        return [x, y];
      };
      const local = (ev) => {
        const r = svg.getBoundingClientRect();
        return [((ev.clientX - r.left) / r.width) * W, ((ev.clientY - r.top) / r.height) * H, r];
      };
      let drag = null, dragY = null;
      overlay.addEventListener("mousemove", (ev) => {
        const [px, py, r] = local(ev);
        const [x] = inv(px, py);
        cross.setAttribute("x1", px); cross.setAttribute("x2", px); cross.setAttribute("visibility", "visible");
        const lines = [`${opts.xLabel || "x"} ${fmt(x)}`];
        for (const s of series) {
          let best = null;
          for (const p of s.points) if (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
          if (best) lines.push(`${s.name}: ${fmt(best[1])} at ${fmt(best[0])}`);
        }
        tip.textContent = lines.join("\n");
        tip.hidden = false;
        tip.style.left = `${Math.min(ev.clientX - r.left + 14, r.width - 180)}px`;
        tip.style.top = `${ev.clientY - r.top + 14}px`;
        if (drag) {
          band.setAttribute("x", Math.min(drag, px)); band.setAttribute("width", Math.abs(px - drag));
          band.setAttribute("visibility", "visible");
        }
      });
      overlay.addEventListener("mouseleave", () => { tip.hidden = true; cross.setAttribute("visibility", "hidden"); });
      overlay.addEventListener("mousedown", (ev) => { [drag, dragY] = local(ev); ev.preventDefault(); });
      overlay.addEventListener("mouseup", (ev) => {
        if (drag === null) return;
        const [px, py] = local(ev);
        const a = inv(Math.min(drag, px), Math.max(dragY, py)), b = inv(Math.max(drag, px), Math.min(dragY, py));
        const wide = Math.abs(px - drag) > 6;
        drag = null; band.setAttribute("visibility", "hidden");
        if (!wide) return;
        const tall = Math.abs(py - dragY) > 6;
        state.zoom = { x: [a[0], b[0]], y: tall ? [a[1], b[1]] : [y0, y1] };
        reset.disabled = false;
        draw();
      });
      overlay.addEventListener("dblclick", () => { state.zoom = null; reset.disabled = true; draw(); });
    }
    logInput.addEventListener("change", () => { state.logY = logInput.checked; state.zoom = null; reset.disabled = true; draw(); });
    reset.addEventListener("click", () => { state.zoom = null; reset.disabled = true; draw(); });
    draw();
    return {
      // Zoom a chart from code (tests, links): x and y ranges in data units.
      zoom(x, y) { state.zoom = { x, y }; reset.disabled = false; draw(); },
    };
  }

  // ---- the run charts: ROC (rejection), scores, loss per epoch --------------------------

  function runLabel(names, i, extra) { return names.length > 1 ? `${names[i]} ${extra}` : extra; }

  function rocSeries(curves, names) {
    const out = [];
    curves.forEach((c, i) => (c.roc || []).forEach((r) => {
      const pts = [];
      for (let k = 0; k < r.eff_s.length; k++) {
        const s = r.eff_s[k], b = r.eff_b[k];
        if (s > 0 && b > 0) pts.push([s, 1 / b]);
      }
      const cls = (c.roc.length > 2 ? `${r.class} ` : "");
      out.push({ name: runLabel(names, i, `${cls}${r.split} (AUC ${fmt(r.auc)})`), points: pts,
        dash: r.split === "train", colour: COLOURS[i % COLOURS.length] });
    }));
    return out;
  }

  function historySeries(curves, names, keys) {
    const out = [];
    curves.forEach((c, i) => keys.forEach((key, j) => {
      const pts = (c.history || []).filter((h) => Number.isFinite(h[key])).map((h) => [h.epoch, h[key]]);
      if (pts.length) out.push({ name: runLabel(names, i, key), points: pts, dash: j > 0,
        colour: names.length > 1 ? COLOURS[i % COLOURS.length] : COLOURS[j % COLOURS.length], markers: true });
    }));
    return out;
  }

  function scoreSeries(curves, names) {
    const out = [];
    curves.forEach((c, i) => (c.scores || []).filter((s) => s.split === "test").forEach((s, j) => {
      const pts = [];
      s.density.forEach((d, k) => { pts.push([s.edges[k], d]); pts.push([s.edges[k + 1], d]); });
      out.push({ name: runLabel(names, i, `${s.class} (score of ${s.score_of})`), points: pts,
        dash: j > 0, colour: names.length > 1 ? COLOURS[i % COLOURS.length] : COLOURS[j % COLOURS.length] });
    }));
    return out;
  }

  function runCharts(root, curves, names) {
    const make = (id, opts) => {
      const box = root.querySelector(`[data-chart="${id}"]`);
      if (box) line(box, opts);
    };
    make("roc", { series: rocSeries(curves, names), xLabel: "signal efficiency", yLabel: "background rejection 1/εB",
      logY: true, xMin: 0, xMax: 1, title: "ROC: background rejection vs signal efficiency" });
    make("loss", { series: historySeries(curves, names, ["val_loss", "train_loss"]), xLabel: "epoch", yLabel: "loss",
      title: "Loss per epoch", integerX: true });
    make("auc", { series: historySeries(curves, names, ["val_auc"]), xLabel: "epoch", yLabel: "validation AUC",
      title: "Validation AUC per epoch", integerX: true });
    make("scores", { series: scoreSeries(curves, names), xLabel: "score", yLabel: "normalised events", xMin: 0, xMax: 1,
      title: "Score distributions (test)" });
  }

  window.MLCharts = { line, runCharts, historySeries, el, fmt, ticks, COLOURS };
})();
