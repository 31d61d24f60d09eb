// mlaas4hep web UI: a run's evaluation charts on its job page (charts.js draws the lines).
//
//   MLCharts.heatmap(container, {...})   confusion matrix, prediction vs truth
//   MLCharts.bars(container, {...})      permutation importance
//   MLCharts.evaluationCharts(root, run) every one of them that *run* (a cleaned
//                                        plots/curves.json, train/curves.py) has data for
//
// The data comes from a file the job wrote: every label is set as text, every array is cut
// to MAX_CELLS, anything but a finite number is skipped. No inline style (the pages' CSP).
"use strict";

(function () {
  if (!window.MLCharts) return;
  const { el, fmt, ticks, COLOURS, line } = window.MLCharts;

  // ---- heatmap and horizontal bars --------------------------------------------------------
  //
  //   MLCharts.heatmap(container, {nx, ny, value(row, col), x: {labels} | {edges},
  //                    y: {labels} | {edges}, tip(row, col) -> [lines], palette, logZ,
  //                    zMin, zMax, zLabel, xLabel, yLabel, title, cellText(row, col), diagonal})
  //   MLCharts.bars(container, {rows: [{name, value, err}], xLabel, title})
  //
  // Labelled axes put row 0 at the top (a matrix), axes with edges grow upwards. Cells with a
  // value that is not a finite number (or not positive on a log scale) are left empty. Hover
  // outlines a cell and shows tip(row, col); drag a rectangle to zoom to its bins,
  // double-click (or "Reset zoom") to go back; the colour scale stays that of every cell.

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
    const pw = HW - m.l - m.r, ph = HH - m.t - m.b;
    container.classList.add("chart");
    container.replaceChildren();
    const bar = document.createElement("div");
    bar.className = "chart-bar";
    const reset = document.createElement("button");
    reset.type = "button"; reset.textContent = "Reset zoom"; reset.disabled = true;
    bar.append(reset);
    const svg = el("svg", { viewBox: `0 0 ${HW} ${HH}`, role: "img", class: "chart-svg",
      "aria-label": opts.title || "heatmap" });
    const tip = document.createElement("div");
    tip.className = "chart-tip"; tip.hidden = true; tip.setAttribute("role", "status");
    container.append(bar, svg, tip);
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
    const full = { c0: 0, c1: nx, r0: 0, r1: ny };
    let view = full;

    function draw() {
      svg.replaceChildren();
      const { c0, c1, r0, r1 } = view;
      const mx = c1 - c0, my = r1 - r0;
      const sub = (axis, a, b) => (axis.labels ? { labels: axis.labels.slice(a, b) } : { edges: axis.edges.slice(a, b + 1) });
      const vx = sub(ax, c0, c1), vy = sub(ay, r0, r1);
      // Pixel span of the k-th shown column or row: [from, to].
      const spanOf = (axis, n, k, lo, len, up) => {
        if (axis.labels) { const w = len / n; return up ? [lo + len - (k + 1) * w, lo + len - k * w] : [lo + k * w, lo + (k + 1) * w]; }
        const e = axis.edges, f = (v) => (v - e[0]) / (e[n] - e[0]) * len;
        return up ? [lo + len - f(e[k + 1]), lo + len - f(e[k])] : [lo + f(e[k]), lo + f(e[k + 1])];
      };
      const colSpan = (c) => spanOf(vx, mx, c, m.l, pw, false);
      const rowSpan = (r) => spanOf(vy, my, r, m.t, ph, !vy.labels);
      const axes = el("g", { class: "chart-axes" }, svg);
      const plot = el("g", {}, svg);
      for (const [r, c, v] of cells) {
        if (r < r0 || r >= r1 || c < c0 || c >= c1) continue;
        const [x0, x1] = colSpan(c - c0), [y0, y1] = rowSpan(r - r0);
        el("rect", { x: x0.toFixed(2), y: y0.toFixed(2), width: (x1 - x0 + 0.3).toFixed(2), height: (y1 - y0 + 0.3).toFixed(2),
          fill: colourAt(opts.palette, tz(v)), "data-cell": `${r},${c}` }, plot);
        if (opts.cellText && mx <= 12 && my <= 12) {
          el("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2 + 4, "text-anchor": "middle",
            class: tz(v) > 0.55 ? "chart-cell chart-cell-dark" : "chart-cell" }, plot).textContent = opts.cellText(r, c);
        }
      }
      const few = (n) => n <= 40;  // category names shown up to 40 per axis
      if (vx.labels && few(mx)) {
        for (let c = 0; c < mx; c++) {
          const x = (colSpan(c)[0] + colSpan(c)[1]) / 2, y = HH - m.b + 12;
          el("text", { x, y, "text-anchor": "end", transform: `rotate(-35 ${x} ${y})` }, axes).textContent = vx.labels[c].slice(0, 24);
        }
      } else if (vx.edges) {
        const e = vx.edges, sx = (v) => m.l + (v - e[0]) / (e[mx] - e[0]) * pw;
        for (const t of ticks(e[0], e[mx], false)) el("text", { x: sx(t), y: HH - m.b + 16, "text-anchor": "middle" }, axes).textContent = fmt(t);
      }
      if (vy.labels && few(my)) {
        for (let r = 0; r < my; r++) {
          el("text", { x: m.l - 6, y: (rowSpan(r)[0] + rowSpan(r)[1]) / 2 + 4, "text-anchor": "end" }, axes).textContent = vy.labels[r].slice(0, 24);
        }
      } else if (vy.edges) {
        const e = vy.edges, sy = (v) => m.t + ph - (v - e[0]) / (e[my] - e[0]) * ph;
        for (const t of ticks(e[0], e[my], false)) el("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, axes).textContent = fmt(t);
      }
      if (opts.diagonal && vx.edges && vy.edges) {
        const lo = Math.max(vx.edges[0], vy.edges[0]), hi = Math.min(vx.edges[mx], vy.edges[my]);
        const px = (v) => m.l + (v - vx.edges[0]) / (vx.edges[mx] - vx.edges[0]) * pw;
        const py = (v) => m.t + ph - (v - vy.edges[0]) / (vy.edges[my] - vy.edges[0]) * ph;
        if (hi > lo) el("line", { x1: px(lo), y1: py(lo), x2: px(hi), y2: py(hi), class: "chart-diagonal" }, plot);
      }
      el("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "chart-frame" }, axes);
      el("text", { x: m.l + pw / 2, y: HH - 8, "text-anchor": "middle", class: "chart-label" }, axes).textContent = opts.xLabel || "";
      el("text", { x: 14, y: m.t + ph / 2, "text-anchor": "middle", class: "chart-label",
        transform: `rotate(-90 14 ${m.t + ph / 2})` }, axes).textContent = opts.yLabel || "";
      colourBar(axes);
      // Hover: the cell under the pointer, outlined, its values in the tooltip; drag: zoom.
      const hover = el("rect", { class: "chart-hover", visibility: "hidden" }, svg);
      const band = el("rect", { class: "chart-band", visibility: "hidden" }, svg);
      const overlay = el("rect", { x: m.l, y: m.t, width: pw, height: ph, fill: "transparent", class: "chart-overlay" }, svg);
      const find = (n, span, p) => { for (let k = 0; k < n; k++) { const [a, b] = span(k); if (p >= a && p < b) return k; } return -1; };
      const local = (ev) => {
        const rect = svg.getBoundingClientRect();
        return [((ev.clientX - rect.left) / rect.width) * HW, ((ev.clientY - rect.top) / rect.height) * HH, rect];
      };
      let drag = null;
      overlay.addEventListener("mousemove", (ev) => {
        const [px, py, rect] = local(ev);
        if (drag) {
          for (const [k, v] of Object.entries({ x: Math.min(drag[0], px), y: Math.min(drag[1], py),
            width: Math.abs(px - drag[0]), height: Math.abs(py - drag[1]) })) band.setAttribute(k, v.toFixed(1));
          band.setAttribute("visibility", "visible");
        }
        const c = find(mx, colSpan, px), r = find(my, rowSpan, py);
        if (c < 0 || r < 0) { tip.hidden = true; hover.setAttribute("visibility", "hidden"); return; }
        const [x0, x1] = colSpan(c), [y0, y1] = rowSpan(r);
        for (const [k, v] of Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 })) hover.setAttribute(k, v.toFixed(2));
        hover.setAttribute("visibility", "visible");
        tip.textContent = opts.tip(r + r0, c + c0).join("\n");
        tip.hidden = false;
        tip.style.left = `${Math.min(ev.clientX - rect.left + 14, rect.width - 200)}px`;
        tip.style.top = `${ev.clientY - rect.top + 14}px`;
      });
      overlay.addEventListener("mouseleave", () => { tip.hidden = true; hover.setAttribute("visibility", "hidden"); });
      overlay.addEventListener("mousedown", (ev) => { drag = local(ev); ev.preventDefault(); });
      overlay.addEventListener("mouseup", (ev) => {
        if (!drag) return;
        const [px, py] = local(ev), [dx, dy] = drag;
        drag = null; band.setAttribute("visibility", "hidden");
        if (Math.abs(px - dx) <= 6 && Math.abs(py - dy) <= 6) return;
        const cs = [find(mx, colSpan, Math.max(Math.min(dx, px), m.l)), find(mx, colSpan, Math.min(Math.max(dx, px), m.l + pw - 0.01))];
        const rs = [find(my, rowSpan, Math.max(Math.min(dy, py), m.t)), find(my, rowSpan, Math.min(Math.max(dy, py), m.t + ph - 0.01))];
        if (cs.includes(-1) || rs.includes(-1)) return;
        zoom({ c0: c0 + Math.min(...cs), c1: c0 + Math.max(...cs) + 1, r0: r0 + Math.min(...rs), r1: r0 + Math.max(...rs) + 1 });
      });
      overlay.addEventListener("dblclick", () => zoom(full));
    }

    function colourBar(axes) {
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
    }

    function zoom(v) {
      view = v.c1 > v.c0 && v.r1 > v.r0 ? v : full;
      reset.disabled = view === full;
      draw();
    }
    reset.addEventListener("click", () => zoom(full));
    draw();
    // Zoom from code (tests, links): bin index ranges [c0, c1) and [r0, r1).
    return { zoom: (c0, c1, r0, r1) => zoom({ c0: Math.max(c0, 0), c1: Math.min(c1, nx), r0: Math.max(r0, 0), r1: Math.min(r1, ny) }) };
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

  Object.assign(window.MLCharts, { heatmap, bars, evaluationCharts });
})();
