// mlaas4hep web UI: the runs table (sort, filter, search as you type) and the compare view.
// Without this file the same works through the forms' GET parameters (server side).
"use strict";

(function () {
  // ---- runs table -----------------------------------------------------------------------
  function runsTable(table) {
    const form = document.getElementById("runs-filter");
    const search = document.getElementById("runs-search");
    const state = document.getElementById("runs-state");
    const tag = document.getElementById("runs-tag");
    const count = document.getElementById("runs-count");
    const body = table.tBodies[0];
    const rows = () => Array.from(body.rows).filter((r) => !r.classList.contains("empty"));

    function tagsMatch(row, wanted) {
      const tags = JSON.parse(row.dataset.tags || "{}");
      return wanted.every((w) => {
        const [k, ...rest] = w.split("=");
        if (!(k in tags)) return false;
        return rest.length === 0 || tags[k] === rest.join("=");
      });
    }

    function filter() {
      const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      const wanted = tag.value.split(",").map((t) => t.trim()).filter(Boolean);
      let shown = 0;
      for (const row of rows()) {
        const ok = words.every((w) => row.dataset.search.includes(w))
          && (!state.value || row.dataset.state === state.value) && tagsMatch(row, wanted);
        row.hidden = !ok;
        if (ok) shown++;
      }
      count.textContent = `${shown} run${shown === 1 ? "" : "s"}`;
    }

    function value(row, index, kind) {
      const raw = row.cells[index].dataset.value ?? "";
      if (raw === "") return null;
      if (kind === "number" || (kind === "mixed" && raw !== "" && !Number.isNaN(Number(raw)))) return Number(raw);
      return raw;
    }

    function sortBy(th) {
      const index = Array.from(th.parentNode.cells).indexOf(th);
      const kind = th.dataset.sortKind;
      const order = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
      for (const other of th.parentNode.cells) if (other.dataset.sortKey) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", order);
      const sign = order === "ascending" ? 1 : -1;
      const sorted = rows().sort((a, b) => {
        const va = value(a, index, kind), vb = value(b, index, kind);
        if (va === null || vb === null) return va === null ? (vb === null ? 0 : 1) : -1;  // missing last
        if (typeof va === "number" && typeof vb === "number") return sign * (va - vb);
        return sign * String(va).localeCompare(String(vb));
      });
      body.append(...sorted);
      form.querySelector('input[name="sort"]').value = th.dataset.sortKey;
      form.querySelector('input[name="order"]').value = order === "ascending" ? "asc" : "desc";
    }

    for (const th of table.tHead.rows[0].cells) {
      if (!th.dataset.sortKey) continue;
      const link = th.querySelector("a");
      const button = document.createElement("button");
      button.type = "button"; button.className = "sort"; button.textContent = link.textContent;
      button.addEventListener("click", () => sortBy(th));
      link.replaceWith(button);
    }
    for (const input of [search, tag]) input.addEventListener("input", filter);
    state.addEventListener("change", filter);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); filter(); });

    const compare = document.getElementById("compare-form");
    const button = document.getElementById("compare-button");
    const selected = () => compare.querySelectorAll('input[name="id"]:checked').length;
    const update = () => { button.disabled = selected() < 2; };
    compare.addEventListener("change", update);
    update();
  }

  // ---- compare view ---------------------------------------------------------------------
  function compareView(data) {
    window.MLCharts.runCharts(document.getElementById("compare-charts"), data.curves, data.names);
    const only = document.getElementById("only-differences");
    const params = document.getElementById("compare-params");
    if (!only || !params) return;
    document.querySelectorAll("button.no-js").forEach((b) => { b.hidden = true; });
    const apply = () => {
      for (const row of params.tBodies[0].rows) row.hidden = only.checked && row.dataset.differs !== "true";
    };
    only.addEventListener("change", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.getElementById("runs-table");
    if (table) runsTable(table);
    const data = document.getElementById("compare-data");
    if (data) compareView(JSON.parse(data.textContent));
  });
})();
