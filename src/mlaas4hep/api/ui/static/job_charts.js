// mlaas4hep web UI, job page: per-epoch charts that follow a running job (ui.js polls the
// job's status and sends each answer as a "job-status" event), and the interactive ROC,
// score and loss charts of a finished run (charts.js), with its confusion matrix,
// regression and importance charts (eval_charts.js).
"use strict";

(function () {
  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("job-curves");
    if (!data || !window.MLCharts) return;
    const doc = JSON.parse(data.textContent);
    const live = document.getElementById("live-charts");
    const done = document.getElementById("run-charts");
    if (done) window.MLCharts.runCharts(done, doc.curves, doc.names);
    if (done && window.MLCharts.evaluationCharts) window.MLCharts.evaluationCharts(done, doc.curves[0]);
    if (!live) return;
    let epochs = -1;
    const draw = (history) => {
      if (history.length === epochs) return;  // redraw on a new epoch only (keeps a zoom)
      epochs = history.length;
      live.dataset.epochs = String(epochs);
      window.MLCharts.runCharts(live, [{ history }], doc.names);
    };
    draw(doc.history || []);
    const section = document.getElementById("live");
    section.addEventListener("job-status", (ev) => {
      const p = ev.detail.progress;
      draw((p && p.history) || []);
    });
  });
})();
