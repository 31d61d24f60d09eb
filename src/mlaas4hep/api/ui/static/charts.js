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
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
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

  // ---- heatmap and horizontal bars --------------------------------------------------------
  //
  //   MLCharts.heatmap(container, {nx, ny, value(row, col), x: {labels} | {edges},
  //                    y: {labels} | {edges}, tip(row, col) -> [lines], palette, logZ,
  //                    zMin, zMax, zLabel, xLabel, yLabel, title, cellText(row, col), diagonal})
  //   MLCharts.bars(container, {rows: [{name, value, err}], xLabel, title})
  //
  // Labelled axes put row 0 at the top (a matrix), axes with edges grow upwards. Cells with a
  // value that is not a finite number (or not positive on a log scale) are left empty.

  const MAX_CELLS = 100;
  const PALETTES = {
    blues: [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]],
    viridis: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  };

  function colourAt(palette, t) {
    const stops = PALETTES[palette] || PALETTES.viridis;
    const u = Math.min(Math.max(Number.isFinite(t) ? t : 0, 0), 1) * (stops.length - 1);
    const k = Math.min(Math.floor(u), stops.length - 2), f = u - k;
    const c = stops[k].map((v, i) => Math.round(v + f * (stops[k + 1][i] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function finite(v) { return typeof v === "number" && Number.isFinite(v) ? v : null; }

  function axisOf(axis, n) {
    // {labels} (categories) or {edges} (n + 1 increasing numbers); null when unusable.
    if (axis && Array.isArray(axis.labels)) return { labels: axis.labels.slice(0, n).map((s) => String(s)) };
    const edges = axis && Array.isArray(axis.edges) ? axis.edges.slice(0, n + 1).map(finite) : [];
    if (edges.length !== n + 1 || edges.some((e, i) => e === null || (i && e <= edges[i - 1]))) return null;
    return { edges };
  }

  function heatmap(container, opts) {
    const nx = Math.min(Math.max(opts.nx | 0, 0), MAX_CELLS), ny = Math.min(Math.max(opts.ny | 0, 0), MAX_CELLS);
    const ax = axisOf(opts.x, nx), ay = axisOf(opts.y, ny);
    const HW = 560, HH = 440;
    const m = { l: ay && ay.labels ? 120 : 62, r: 92, t: 14, b: ax && ax.labels ? 100 : 44 };
    container.classList.add("chart");
    container.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${HW} ${HH}`, role: "img", class: "chart-svg",
      "aria-label": opts.title || "heatmap" });
    const tip = document.createElement("div");
    tip.className = "chart-tip"; tip.hidden = true; tip.setAttribute("role", "status");
    container.append(svg, tip);
    const cells = [];
    if (ax && ay) for (let r = 0; r < ny; r++) for (let c = 0; c < nx; c++) {
      const v = finite(opts.value(r, c));
      if (v !== null && (!opts.logZ || v > 0)) cells.push([r, c, v]);
    }
    if (!cells.length) {
      el("text", { x: HW / 2, y: HH / 2, "text-anchor": "middle", class: "chart-empty" }, svg).textContent = "no data";
      return {};
    }
    let z0 = finite(opts.zMin), z1 = finite(opts.zMax);
    if (z0 === null) z0 = Math.min(...cells.map((e) => e[2]));
    if (z1 === null) z1 = Math.max(...cells.map((e) => e[2]));
    if (z1 <= z0) z1 = z0 + (opts.logZ ? z0 : 1);
    const fz = opts.logZ ? (v) => Math.log10(v) : (v) => v;
    const tz = (v) => (fz(v) - fz(z0)) / (fz(z1) - fz(z0));
    const pw = HW - m.l - m.r, ph = HH - m.t - m.b;
    // Pixel span of column c / row r: [from, to].
    const spanOf = (axis, n, k, lo, len, up) => {
      if (axis.labels) { const w = len / n; return up ? [lo + len - (k + 1) * w, lo + len - k * w] : [lo + k * w, lo + (k + 1) * w]; }
      const e = axis.edges, f = (v) => (v - e[0]) / (e[n] - e[0]) * len;
      return up ? [lo + len - f(e[k + 1]), lo + len - f(e[k])] : [lo + f(e[k]), lo + f(e[k + 1])];
    };
    const colSpan = (c) => spanOf(ax, nx, c, m.l, pw, false);
    const rowSpan = (r) => spanOf(ay, ny, r, m.t, ph, !ay.labels);
    const axes = el("g", { class: "chart-axes" }, svg);
    const plot = el("g", {}, svg);
    for (const [r, c, v] of cells) {
      const [x0, x1] = colSpan(c), [y0, y1] = rowSpan(r);
      el("rect", { x: x0.toFixed(2), y: y0.toFixed(2), width: (x1 - x0 + 0.3).toFixed(2), height: (y1 - y0 + 0.3).toFixed(2),
        fill: colourAt(opts.palette, tz(v)), "data-cell": `${r},${c}` }, plot);
      if (opts.cellText && nx <= 12 && ny <= 12) {
        el("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2 + 4, "text-anchor": "middle",
          class: tz(v) > 0.55 ? "chart-cell chart-cell-dark" : "chart-cell" }, plot).textContent = opts.cellText(r, c);
      }
    }
    const label = (axis, n, k) => (axis.labels ? (axis.labels[k] || "").slice(0, 24) : "");
    if (ax.labels) {
      for (let c = 0; c < nx; c++) {
        const x = (colSpan(c)[0] + colSpan(c)[1]) / 2, y = HH - m.b + 12;
        el("text", { x, y, "text-anchor": "end", transform: `rotate(-35 ${x} ${y})` }, axes).textContent = label(ax, nx, c);
      }
    } else {
      const e = ax.edges, sx = (v) => m.l + (v - e[0]) / (e[nx] - e[0]) * pw;
      for (const t of ticks(e[0], e[nx], false)) el("text", { x: sx(t), y: HH - m.b + 16, "text-anchor": "middle" }, axes).textContent = fmt(t);
    }
    if (ay.labels) {
      for (let r = 0; r < ny; r++) {
        el("text", { x: m.l - 6, y: (rowSpan(r)[0] + rowSpan(r)[1]) / 2 + 4, "text-anchor": "end" }, axes).textContent = label(ay, ny, r);
      }
    } else {
      const e = ay.edges, sy = (v) => m.t + ph - (v - e[0]) / (e[ny] - e[0]) * ph;
      for (const t of ticks(e[0], e[ny], false)) el("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, axes).textContent = fmt(t);
    }
    if (opts.diagonal && ax.edges && ay.edges) {
      const lo = Math.max(ax.edges[0], ay.edges[0]), hi = Math.min(ax.edges[nx], ay.edges[ny]);
      const px = (v) => m.l + (v - ax.edges[0]) / (ax.edges[nx] - ax.edges[0]) * pw;
      const py = (v) => m.t + ph - (v - ay.edges[0]) / (ay.edges[ny] - ay.edges[0]) * ph;
      if (hi > lo) el("line", { x1: px(lo), y1: py(lo), x2: px(hi), y2: py(hi), class: "chart-diagonal" }, plot);
    }
    el("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "chart-frame" }, axes);
    el("text", { x: m.l + pw / 2, y: HH - 8, "text-anchor": "middle", class: "chart-label" }, axes).textContent = opts.xLabel || "";
    el("text", { x: 14, y: m.t + ph / 2, "text-anchor": "middle", class: "chart-label",
      transform: `rotate(-90 14 ${m.t + ph / 2})` }, axes).textContent = opts.yLabel || "";
    // Colour bar with its scale.
    const gid = `grad-${Math.random().toString(36).slice(2)}`;
    const grad = el("linearGradient", { id: gid, x1: 0, y1: 1, x2: 0, y2: 0 }, el("defs", {}, svg));
    for (let k = 0; k <= 10; k++) el("stop", { offset: k / 10, "stop-color": colourAt(opts.palette, k / 10) }, grad);
    const bx = HW - m.r + 14;
    el("rect", { x: bx, y: m.t, width: 14, height: ph, fill: `url(#${gid})`, class: "chart-colourbar" }, axes);
    for (const t of ticks(z0, z1, !!opts.logZ)) {
      const y = m.t + ph - tz(t) * ph;
      el("line", { x1: bx + 14, x2: bx + 18, y1: y, y2: y, class: "chart-frame" }, axes);
      el("text", { x: bx + 20, y: y + 4 }, axes).textContent = fmt(t);
    }
    el("text", { x: HW - 8, y: m.t + ph / 2, "text-anchor": "middle", class: "chart-label",
      transform: `rotate(-90 ${HW - 8} ${m.t + ph / 2})` }, axes).textContent = (opts.zLabel || "") + (opts.logZ ? " (log)" : "");
    // Hover: the cell under the pointer, outlined, its values in the tooltip.
    const hover = el("rect", { class: "chart-hover", visibility: "hidden" }, svg);
    const overlay = el("rect", { x: m.l, y: m.t, width: pw, height: ph, fill: "transparent", class: "chart-overlay" }, svg);
    const find = (n, span, p) => { for (let k = 0; k < n; k++) { const [a, b] = span(k); if (p >= a && p < b) return k; } return -1; };
    overlay.addEventListener("mousemove", (ev) => {
      const rect = svg.getBoundingClientRect();
      const px = ((ev.clientX - rect.left) / rect.width) * HW, py = ((ev.clientY - rect.top) / rect.height) * HH;
      const c = find(nx, colSpan, px), r = find(ny, rowSpan, py);
      if (c < 0 || r < 0) { tip.hidden = true; hover.setAttribute("visibility", "hidden"); return; }
      const [x0, x1] = colSpan(c), [y0, y1] = rowSpan(r);
      for (const [k, v] of Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 })) hover.setAttribute(k, v.toFixed(2));
      hover.setAttribute("visibility", "visible");
      tip.textContent = opts.tip(r, c).join("\n");
      tip.hidden = false;
      tip.style.left = `${Math.min(ev.clientX - rect.left + 14, rect.width - 200)}px`;
      tip.style.top = `${ev.clientY - rect.top + 14}px`;
    });
    overlay.addEventListener("mouseleave", () => { tip.hidden = true; hover.setAttribute("visibility", "hidden"); });
    return {};
  }

  function bars(container, opts) {
    const rows = (Array.isArray(opts.rows) ? opts.rows : []).slice(0, MAX_CELLS)
      .map((r) => ({ name: String(r.name), value: finite(r.value), err: finite(r.err) || 0 }))
      .filter((r) => r.value !== null);
    const BW = 560, row = 20, m = { l: 170, r: 16, t: 8, b: 40 };
    const BH = m.t + m.b + row * Math.max(rows.length, 1);
    container.classList.add("chart");
    container.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${BW} ${BH}`, role: "img", class: "chart-svg", "aria-label": opts.title || "bars" });
    const tip = document.createElement("div");
    tip.className = "chart-tip"; tip.hidden = true; tip.setAttribute("role", "status");
    container.append(svg, tip);
    if (!rows.length) {
      el("text", { x: BW / 2, y: BH / 2, "text-anchor": "middle", class: "chart-empty" }, svg).textContent = "no data";
      return {};
    }
    let lo = Math.min(0, ...rows.map((r) => r.value - r.err)), hi = Math.max(0, ...rows.map((r) => r.value + r.err));
    if (hi <= lo) hi = lo + 1;
    const pw = BW - m.l - m.r, sx = (v) => m.l + (v - lo) / (hi - lo) * pw;
    const axes = el("g", { class: "chart-axes" }, svg);
    for (const t of ticks(lo, hi, false)) {
      el("line", { x1: sx(t), x2: sx(t), y1: m.t, y2: BH - m.b, class: "chart-grid" }, axes);
      el("text", { x: sx(t), y: BH - m.b + 16, "text-anchor": "middle" }, axes).textContent = fmt(t);
    }
    el("text", { x: m.l + pw / 2, y: BH - 6, "text-anchor": "middle", class: "chart-label" }, axes).textContent = opts.xLabel || "";
    rows.forEach((r, k) => {
      const y = m.t + k * row;
      el("text", { x: m.l - 6, y: y + row / 2 + 4, "text-anchor": "end" }, axes).textContent = r.name.slice(0, 28);
      const bar = el("rect", { x: Math.min(sx(0), sx(r.value)), y: y + 3, width: Math.abs(sx(r.value) - sx(0)) || 1,
        height: row - 6, fill: COLOURS[0], class: "chart-bar-rect", "data-bar": String(k) }, svg);
      if (r.err) el("line", { x1: sx(r.value - r.err), x2: sx(r.value + r.err), y1: y + row / 2, y2: y + row / 2, class: "chart-err" }, svg);
      const hit = el("rect", { x: m.l, y, width: pw, height: row, fill: "transparent", class: "chart-overlay" }, svg);
      hit.addEventListener("mousemove", (ev) => {
        const rect = svg.getBoundingClientRect();
        tip.textContent = `${r.name}\n${fmt(r.value)} ± ${fmt(r.err)}`;
        tip.hidden = false;
        tip.style.left = `${Math.min(ev.clientX - rect.left + 14, rect.width - 200)}px`;
        tip.style.top = `${ev.clientY - rect.top + 14}px`;
        bar.setAttribute("fill", COLOURS[1]);
      });
      hit.addEventListener("mouseleave", () => { tip.hidden = true; bar.setAttribute("fill", COLOURS[0]); });
    });
    el("line", { x1: sx(0), x2: sx(0), y1: m.t, y2: BH - m.b, class: "chart-frame" }, axes);
    return {};
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
    evaluationCharts(root, curves[0]);
  }

  // ---- a run's confusion matrix, regression and permutation importance (the job page) ----

  function obj(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
  function cellOf(m, r, c) { const row = Array.isArray(m) ? m[r] : null; return Array.isArray(row) ? finite(row[c]) : null; }
  function list(v) { return (Array.isArray(v) ? v : []).slice(0, MAX_CELLS).filter(obj); }

  function confusionChart(box, cm) {
    const classes = (Array.isArray(cm.classes) ? cm.classes : []).slice(0, MAX_CELLS).map((s) => String(s));
    const n = classes.length;
    const frac = (r, c) => cellOf(cm.fraction, r, c);
    heatmap(box, { nx: n, ny: n, x: { labels: classes }, y: { labels: classes }, palette: "blues", value: frac,
      zMin: 0, zMax: 1, zLabel: "fraction of the true class", xLabel: "predicted class", yLabel: "true class",
      title: "Confusion matrix (test, weighted)", cellText: (r, c) => fmt(frac(r, c)),
      tip: (r, c) => [`true class: ${classes[r]}`, `predicted: ${classes[c]}`, `fraction: ${fmt(frac(r, c))}`,
        `weighted events: ${fmt(cellOf(cm.weight, r, c))}`, `events: ${fmt(cellOf(cm.events, r, c))}`] });
  }

  function regressionCharts(root, reg) {
    const edges = Array.isArray(reg.edges) ? reg.edges : [];
    const n = edges.length - 1;
    const count = (r, c) => cellOf(reg.counts, c, r);  // counts: rows = bins of the truth
    const range = (k) => `${fmt(edges[k])} to ${fmt(edges[k + 1])}`;
    const box = (id) => root.querySelector(`[data-chart="${id}"]`);
    if (box("regression")) heatmap(box("regression"), { nx: n, ny: n, x: { edges }, y: { edges }, palette: "viridis",
      logZ: true, diagonal: true, value: count, zLabel: "events", xLabel: "truth", yLabel: "prediction",
      title: "Prediction vs truth (test, weighted)",
      tip: (r, c) => [`truth: ${range(c)}`, `prediction: ${range(r)}`, `events: ${fmt(count(r, c))}`] });
    const ratio = reg.definition === "ratio";
    const bins = list(reg.bins).filter((b) => finite(b.low) !== null && finite(b.high) !== null);
    const pts = (key) => bins.filter((b) => finite(b[key]) !== null).map((b) => [(b.low + b.high) / 2, b[key]]);
    const xs = bins.map((b) => (b.low + b.high) / 2), ideal = ratio ? 1 : 0;
    const ref = xs.length ? [{ name: ratio ? "ideal (1)" : "no bias (0)", dash: true, colour: "#8c959f",
      points: [[Math.min(...xs), ideal], [Math.max(...xs), ideal]] }] : [];
    if (box("response")) line(box("response"), { series: [{ name: "response", points: pts("response"), markers: true }, ...ref],
      xLabel: "truth", yLabel: ratio ? "median prediction / truth" : "median (prediction − truth)",
      title: "Response vs truth (test, weighted)" });
    if (box("resolution")) line(box("resolution"), { series: [{ name: "resolution", points: pts("resolution"), markers: true,
      colour: COLOURS[1] }], xLabel: "truth", yLabel: ratio ? "σ68 / median" : "σ68", yMin: 0,
      title: "Resolution vs truth (test, weighted)" });
  }

  function importanceChart(box, imp) {
    const rows = list(imp.features).map((f) => ({ name: f.name, value: f.importance, err: f.std }));
    bars(box, { rows, title: "Permutation importance",
      xLabel: imp.metric === "auc" ? "decrease of ROC AUC when shuffled" : "increase of MSE when shuffled" });
  }

  function evaluationCharts(root, run) {
    if (!obj(run)) return;
    const box = (id) => root.querySelector(`[data-chart="${id}"]`);
    if (obj(run.confusion) && box("confusion")) confusionChart(box("confusion"), run.confusion);
    if (obj(run.regression)) regressionCharts(root, run.regression);
    if (obj(run.importance) && box("importance")) importanceChart(box("importance"), run.importance);
  }

  window.MLCharts = { line, heatmap, bars, runCharts, historySeries };
})();
