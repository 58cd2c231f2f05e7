// The ledger web page: reads the JSON API, draws tables, charts (chart.js, built into
// /static/vendor by `make web-assets`) and an SVG lineage graph. No inline script, no
// other site: the Content-Security-Policy forbids both. Every text from the API is shown
// with textContent (never as markup) after visible() has exposed invisible characters.
"use strict";

const ledger = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLUMNS_KEY = "ledger-columns";
  // Colour-blind-safe palette (Okabe–Ito, darkened where white text or thin lines need contrast).
  const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9", "#000000", "#e69f00"];

  function token() {
    return window.localStorage.getItem("ledger-token");
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const saved = token();
    if (saved) headers.Authorization = "Bearer " + saved;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) {
      const given = window.prompt("This ledger API needs a bearer token:");
      if (given) {
        window.localStorage.setItem("ledger-token", given);
        return api(path, options);
      }
    }
    let body;
    try {
      body = await response.json();
    } catch (error) {
      throw new Error(response.status + ": the server's answer is not JSON");
    }
    if (!response.ok) {
      const error = new Error((body.title || response.status) + ": " + (body.detail || "") + (body.hint ? "\n" + body.hint : ""));
      error.status = response.status;
      error.title = body.title;
      throw error;
    }
    return body;
  }

  // Characters that change how the text around them displays without showing
  // themselves (bidirectional overrides and isolates, zero-width characters, BOM...):
  // a name could display as another name. Every text the page shows from the API goes
  // through visible(), which writes each of them as a visible ⟦U+202E⟧ marker.
  const INVISIBLE = /[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]/g;

  function visible(text) {
    return String(text).replace(INVISIBLE, (c) => "⟦U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟧");
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === undefined || child === null || child === "") continue;
      node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = visible(text);
    return node;
  }

  // A name from a manifest: its own direction cannot reorder the row around it.
  function named(text) {
    return el("bdi", { class: "name" }, text);
  }

  function short(hex) {
    return hex ? hex.slice(0, 10) + "…" + hex.slice(-4) : "";
  }

  function when(seconds) {
    return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "";
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.round((seconds % 86400) / 3600) + " h";
  }

  function number(value) {
    if (typeof value !== "number") return value === null || value === undefined ? "" : String(value);
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(3) : String(Number(value.toPrecision(5)));
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || text) }, text);
  }

  function showError(error) {
    document.getElementById("message").textContent = visible(error.message || error);
  }

  function runLink(runId, name) {
    return el("a", { href: "/runs/" + runId }, name ? named(name) : el("span", { class: "mono" }, short(runId)));
  }

  // A run's data sources: the index's datasets (with CIDs and revocations) when the API
  // has them, else the sources its manifest names (data_sources). Parts are left out.
  function sourcesOf(run) {
    if (Array.isArray(run.datasets)) {
      return run.datasets.filter((d) => !d.part_of).map((d) => ({ key: d.key, kind: d.kind, name: d.name, id: d.cid, cid: d.cid, revoked: !!d.revoked }));
    }
    return (run.data_sources || []).map((d) => ({ key: d.key, kind: d.kind, name: d.name, id: d.id, cid: null, revoked: false }));
  }

  // -- metrics: which series are noise, how they group into charts ------------------

  // Counters and timings (HF Trainer's eval_runtime, *_per_second, step/epoch counters,
  // FLOs): hidden by default, one click away.
  const NOISE = /(^|[_/.])(runtime|per_second|samples_per_second|steps_per_second|total_flos|flos)$|^(step|epoch|global_step|_step|_runtime|_timestamp)$/;

  function isNoise(name) {
    return NOISE.test(name);
  }

  // train_loss, val_loss and eval/loss share one chart ("loss"); accuracy another.
  function groupOf(name) {
    return name.replace(/^(train(ing)?|val(id(ation)?)?|eval|test)[_/.-]/, "") || name;
  }

  function isLoss(group) {
    return /loss|perplexity|error|mse|mae|rmse/i.test(group);
  }

  // Checkpoint metrics as series: {name: [[x, y], ...]}, x the epoch when every
  // checkpoint has one, else the step.
  function seriesOf(run) {
    const checkpoints = run.checkpoints || [];
    const byEpoch = checkpoints.length > 0 && checkpoints.every((c) => c.metrics && typeof c.metrics.epoch === "number");
    const series = {};
    for (const c of checkpoints) {
      if (!c.metrics) continue;
      const x = byEpoch ? c.metrics.epoch : c.step;
      for (const [key, value] of Object.entries(c.metrics)) {
        if (typeof value !== "number" || !Number.isFinite(value)) continue;
        if (byEpoch && key === "epoch") continue;
        (series[key] = series[key] || []).push([x, value]);
      }
    }
    for (const points of Object.values(series)) points.sort((a, b) => a[0] - b[0]);
    return { series, axis: byEpoch ? "epoch" : "step" };
  }

  // A set of charts, one per metric group, each with one line per (run, metric).
  // runs: [{label, color, series, axis}]. Without chart.js the numbers go in tables.
  function drawCharts(runs) {
    const box = document.getElementById("charts");
    const note = document.getElementById("charts-note");
    const logBox = document.getElementById("log-scale");
    const hiddenBox = document.getElementById("show-hidden");
    const groups = {};
    let hiddenCount = 0;
    const names = new Set();
    runs.forEach((run) => Object.keys(run.series).forEach((n) => names.add(n)));
    for (const name of [...names].sort()) {
      const noise = isNoise(name);
      if (noise) hiddenCount += 1;
      const group = groupOf(name);
      const key = (noise ? "~" : "") + group;
      (groups[key] = groups[key] || { group, noise, names: [] }).names.push(name);
    }
    document.getElementById("hidden-count").textContent = hiddenCount ? "(" + hiddenCount + ")" : "(none)";
    const charts = [];

    function render() {
      for (const chart of charts.splice(0)) chart.destroy();
      box.replaceChildren();
      const shown = Object.values(groups).filter((g) => hiddenBox.checked || !g.noise);
      if (!shown.length) {
        box.append(el("p", {}, names.size ? "Only counters and timings were recorded: tick the box above to see them." : "No checkpoint metrics in the store."));
        return;
      }
      const ChartLib = window.Chart;
      if (!ChartLib) {
        note.hidden = false;
        note.textContent = "Charts are unavailable: this server has no chart library (run `make web-assets` where it was installed). The numbers are in the tables below.";
      }
      for (const g of shown.sort((a, b) => a.group.localeCompare(b.group))) {
        const lines = [];
        runs.forEach((run, r) => g.names.forEach((name, n) => {
          const points = run.series[name];
          if (!points) return;
          const label = (runs.length > 1 ? run.label + " · " : "") + name;
          lines.push({ label: visible(label), points, color: PALETTE[(runs.length > 1 ? r : n) % PALETTE.length], dash: runs.length > 1 && n > 0 ? [6, 3] : [] });
        }));
        const axis = runs[0].axis;
        const loss = isLoss(g.group);
        const title = el("h3", {}, g.group + (loss && logBox.checked ? " (log scale)" : ""));
        const figure = el("figure", { class: "chart", "data-group": g.group, "data-metrics": g.names.join(" ") }, title);
        box.append(figure);
        if (!ChartLib) {
          figure.append(pointsTable(lines, axis));
          continue;
        }
        const canvas = el("canvas", { role: "img", "aria-label": visible(g.group + ": " + lines.map((l) => l.label).join(", ") + " over " + axis + "s") });
        figure.append(el("div", { class: "canvas-box" }, canvas));
        const logarithmic = loss && logBox.checked && lines.every((l) => l.points.every((p) => p[1] > 0));
        charts.push(new ChartLib(canvas, {
          type: "line",
          data: {
            datasets: lines.map((l) => ({
              label: l.label,
              data: l.points.map((p) => ({ x: p[0], y: p[1] })),
              borderColor: l.color,
              backgroundColor: l.color,
              borderDash: l.dash,
              borderWidth: 2,
              pointRadius: 3,
              pointHoverRadius: 6,
              tension: 0,
            })),
          },
          options: {
            animation: false,
            responsive: true,
            maintainAspectRatio: false,
            parsing: true,
            interaction: { mode: "nearest", axis: "x", intersect: false },
            scales: {
              x: { type: "linear", title: { display: true, text: axis }, ticks: { precision: 0 } },
              // chart.js pads a constant series by 5% of its value: no −0.9…1.1 axis
              y: { type: logarithmic ? "logarithmic" : "linear", title: { display: true, text: g.group }, grace: "5%" },
            },
            plugins: {
              legend: { display: lines.length > 1, position: "bottom", labels: { boxWidth: 12 } },
              tooltip: { callbacks: { label: (item) => item.dataset.label + ": " + number(item.parsed.y) } },
            },
          },
        }));
      }
    }

    logBox.onchange = render;
    hiddenBox.onchange = render;
    render();
    return charts;
  }

  function pointsTable(lines, axis) {
    const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p[0])))].sort((a, b) => a - b);
    const head = el("tr", {}, el("th", { scope: "col" }, axis), ...lines.map((l) => el("th", { scope: "col" }, l.label)));
    const rows = xs.map((x) => el("tr", {}, el("td", { class: "num" }, number(x)),
      ...lines.map((l) => { const p = l.points.find((q) => q[0] === x); return el("td", { class: "num" }, p ? number(p[1]) : ""); })));
    return el("table", { class: "points" }, el("thead", {}, head), el("tbody", {}, ...rows));
  }

  // -- runs table -------------------------------------------------------------------

  function savedColumns() {
    try {
      const saved = JSON.parse(window.localStorage.getItem(COLUMNS_KEY) || "null");
      if (saved && Array.isArray(saved.metrics) && Array.isArray(saved.params)) {
        return { metrics: saved.metrics.filter((k) => typeof k === "string"), params: saved.params.filter((k) => typeof k === "string") };
      }
    } catch (error) { /* a damaged setting: start again */ }
    return null;
  }

  function runsPage() {
    const form = document.getElementById("filter-form");
    const input = document.getElementById("filter");
    const head = document.querySelector("#runs thead tr");
    const body = document.querySelector("#runs tbody");
    const more = document.getElementById("more");
    const compare = document.getElementById("compare");
    const params = new URLSearchParams(window.location.search);
    input.value = params.get("q") || "";
    let cursor = null;
    let runs = [];
    let tainted = new Set();
    const selected = new Set();
    let chosen = savedColumns();
    let sort = { key: "started", dir: -1 };

    const fixed = [
      { key: "select", label: "compare", sortable: false, cell: (run) => el("td", {}, el("input", {
        type: "checkbox", class: "pick", "aria-label": visible("compare " + (run.name || run.run_id)), checked: selected.has(run.run_id), "data-run": run.run_id })) },
      { key: "run", label: "run", value: (r) => r.run_id, cell: (r) => el("td", {}, el("a", { href: "/runs/" + r.run_id, class: "mono" }, short(r.run_id))) },
      { key: "name", label: "name", value: (r) => r.name || "", cell: (r) => el("td", { class: "name-cell" }, named(r.name || "—")) },
      { key: "status", label: "status", value: (r) => (r.revoked ? "0" : isTainted(r) ? "1" : "2") + r.status, cell: (r) => el("td", {}, badge(r.status), r.revoked ? " " : "", r.revoked ? badge("revoked") : "", isTainted(r) && !r.revoked ? " " : "", isTainted(r) && !r.revoked ? badge("tainted") : "") },
      { key: "committer", label: "committer", value: (r) => r.committer, cell: (r) => el("td", { class: "mono" }, short(r.committer)) },
      { key: "started", label: "started (UTC)", value: (r) => r.started_at, cell: (r) => el("td", {}, when(r.started_at)) },
      { key: "duration", label: "duration", value: (r) => (r.ended_at ? r.ended_at - r.started_at : null), cell: (r) => el("td", { class: "num" }, r.ended_at ? duration(r.ended_at - r.started_at) : r.status === "running" ? "running" : "") },
      { key: "datasets", label: "data", value: (r) => sourcesOf(r).map((d) => d.key).join(", "), cell: (r) => el("td", { class: "name-cell" }, ...sourcesOf(r).flatMap((d, i) => [i ? ", " : "", named(d.key)])) },
      { key: "sweep", label: "sweep", value: (r) => r.sweep_id || "", cell: (r) => el("td", { class: "name-cell" }, r.sweep_id ? r.sweep_id + (r.sweep_trial !== null ? " #" + r.sweep_trial : "") : "") },
      { key: "checkpoints", label: "checkpoints", value: (r) => r.checkpoint_count, cell: (r) => el("td", { class: "num" }, r.checkpoint_count) },
    ];

    // descends from a revoked run (GET /taint), or trained on revoked data (revoked_data)
    function isTainted(r) {
      return tainted.has(r.run_id) || (Array.isArray(r.revoked_data) && r.revoked_data.length > 0);
    }

    function columns() {
      const picked = chosen || { metrics: [], params: [] };
      return [
        ...fixed,
        ...picked.metrics.map((m) => ({ key: "metric:" + m, label: m, value: (r) => (r.metrics || {})[m], cell: (r) => el("td", { class: "num" }, number((r.metrics || {})[m])) })),
        ...picked.params.map((p) => ({ key: "param:" + p, label: p, value: (r) => (r.params || {})[p], cell: (r) => el("td", { class: "num" }, number((r.params || {})[p])) })),
      ];
    }

    function compareValues(a, b) {
      const empty = (v) => v === undefined || v === null || v === "";
      if (empty(a) && empty(b)) return 0;
      if (empty(a)) return 1; // blanks last either way
      if (empty(b)) return -1;
      if (typeof a === "number" && typeof b === "number") return (a - b) * sort.dir;
      return String(a).localeCompare(String(b), undefined, { numeric: true }) * sort.dir;
    }

    function draw() {
      const cols = columns();
      head.replaceChildren(...cols.map((c) => {
        const th = el("th", { scope: "col", "data-key": c.key });
        if (c.sortable === false) th.append(el("span", { class: "sr-only" }, c.label), "✓");
        else {
          th.append(el("button", { type: "button", class: "sort", title: "sort by " + c.label }, c.label));
          th.setAttribute("aria-sort", sort.key === c.key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
          th.querySelector("button").addEventListener("click", () => {
            sort = { key: c.key, dir: sort.key === c.key ? -sort.dir : 1 };
            draw();
            head.querySelector(`th[data-key="${CSS.escape(c.key)}"] button`).focus();
          });
        }
        return th;
      }));
      const col = cols.find((c) => c.key === sort.key) || fixed[5];
      const ordered = [...runs].sort((a, b) => compareValues(col.value(a), col.value(b)));
      body.replaceChildren(...ordered.map((run) => {
        const kind = run.revoked ? "revoked" : isTainted(run) ? "tainted" : "";
        return el("tr", { class: kind, "data-run": run.run_id }, ...cols.map((c) => c.cell(run)));
      }));
      for (const box of body.querySelectorAll("input.pick")) {
        box.addEventListener("change", () => {
          if (box.checked) selected.add(box.dataset.run); else selected.delete(box.dataset.run);
          updateCompare();
        });
      }
    }

    function updateCompare() {
      compare.disabled = selected.size < 2;
      document.getElementById("selected-count").textContent = selected.size ? selected.size + " selected" : "";
    }

    function drawPicker() {
      const metricKeys = new Set(chosen ? chosen.metrics : []);
      const paramKeys = new Set(chosen ? chosen.params : []);
      runs.forEach((r) => {
        Object.keys(r.metrics || {}).forEach((k) => metricKeys.add(k));
        Object.keys(r.params || {}).forEach((k) => paramKeys.add(k));
      });
      if (!chosen) { // first visit: the first two metrics that are not counters
        chosen = { metrics: [...metricKeys].filter((k) => !isNoise(k)).sort().slice(0, 2), params: [] };
      }
      function boxes(target, keys, kind) {
        target.replaceChildren(...[...keys].sort().map((k) => {
          const box = el("input", { type: "checkbox", "data-kind": kind, value: k, checked: chosen[kind].includes(k) });
          box.addEventListener("change", () => {
            const list = chosen[kind].filter((x) => x !== k);
            if (box.checked) list.push(k);
            chosen[kind] = list;
            window.localStorage.setItem(COLUMNS_KEY, JSON.stringify(chosen));
            draw();
          });
          return el("label", {}, box, " ", k);
        }));
        if (!keys.size) target.append(el("span", {}, "none recorded"));
      }
      boxes(document.getElementById("metric-columns"), metricKeys, "metrics");
      boxes(document.getElementById("param-columns"), paramKeys, "params");
    }

    async function load(reset) {
      document.getElementById("message").textContent = "";
      const query = new URLSearchParams({ limit: "50", metrics: "true", params: "true", data: "true" });
      if (input.value.trim()) query.set("q", input.value.trim());
      if (!reset && cursor) query.set("cursor", cursor);
      try {
        const [page, taint] = await Promise.all([
          api("/api/v1/runs?" + query),
          reset ? api("/api/v1/taint").catch(() => ({ runs: [] })) : Promise.resolve(null),
        ]);
        if (taint) tainted = new Set(taint.runs.map((t) => t.run_id));
        runs = reset ? page.runs : runs.concat(page.runs);
        cursor = page.next_cursor;
        more.hidden = !cursor;
        drawPicker();
        draw();
      } catch (error) {
        showError(error);
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const url = new URL(window.location.href);
      url.searchParams.set("q", input.value.trim());
      window.history.replaceState(null, "", url);
      cursor = null;
      load(true);
    });
    more.addEventListener("click", () => load(false));
    compare.addEventListener("click", () => {
      window.location.href = "/compare?runs=" + [...selected].map(encodeURIComponent).join(",");
    });
    load(true);
  }

  // -- run page ---------------------------------------------------------------------

  function drawLineage(graph, run) {
    const current = run.run_id;
    const byGeneration = {};
    for (const node of graph.nodes) (byGeneration[node.generation] = byGeneration[node.generation] || []).push(node);
    // the run's data sources sit with its parents, one column to its left
    const datasets = sourcesOf(run).slice(0, 12);
    if (datasets.length) byGeneration[-1] = byGeneration[-1] || [];
    const generations = Object.keys(byGeneration).map(Number).sort((a, b) => a - b);
    const colWidth = 250, rowHeight = 56, boxW = 170, boxH = 40;
    const rows = Math.max(...generations.map((g) => byGeneration[g].length + (g === -1 ? datasets.length : 0)));
    const width = generations.length * colWidth + 20, height = rows * rowHeight + 20;
    const place = {};
    const column = {};
    generations.forEach((g, col) => {
      column[g] = col;
      byGeneration[g].forEach((node, row) => {
        place[node.run_id] = { x: 10 + col * colWidth, y: 10 + row * rowHeight, node };
      });
    });
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lineage-graph", role: "group", "aria-label": "lineage: parents and data to the left, children to the right" });
    const me = place[current];
    datasets.forEach((d, i) => {
      const x = 10 + column[-1] * colWidth, y = 10 + (byGeneration[-1].length + i) * rowHeight;
      const g = d.cid ? svg("a", { href: "/datasets/" + encodeURIComponent(d.cid), class: "dataset", "data-dataset": d.key }) : svg("g", { class: "dataset", "data-dataset": d.key });
      g.append(svg("title", {}, "data " + d.key + (d.name ? " (" + d.name + ")" : "") + (d.id ? " " + d.id : "") + (d.revoked ? ": REVOKED" : "")));
      g.append(svg("rect", { x, y, width: boxW, height: boxH, rx: 14, fill: d.revoked ? "#ffebe9" : "#f6f8fa", stroke: d.revoked ? "#cf222e" : "#0072b2", "stroke-dasharray": "4 2" }));
      g.append(svg("text", { x: x + 8, y: y + 16 }, ("data: " + d.key).slice(0, 26)));
      g.append(svg("text", { x: x + 8, y: y + 31 }, (d.revoked ? "REVOKED · " : "") + (d.name || d.kind || "").slice(0, 14) + (d.id ? " " + d.id.slice(0, 10) + "…" : "")));
      root.append(g);
      if (me) root.append(svg("line", { x1: x + boxW, y1: y + boxH / 2, x2: me.x, y2: me.y + boxH / 2, stroke: "#0072b2", "stroke-dasharray": "4 2" }));
    });
    for (const edge of graph.edges) {
      const a = place[edge.parent], b = place[edge.child];
      if (!a || !b) continue;
      root.append(svg("line", { x1: a.x + boxW, y1: a.y + boxH / 2, x2: b.x, y2: b.y + boxH / 2, stroke: "#57606a" }));
      root.append(svg("text", { x: (a.x + boxW + b.x) / 2, y: (a.y + b.y) / 2 + boxH / 2 - 5, "text-anchor": "middle" }, edge.relation));
    }
    for (const { x, y, node } of Object.values(place)) {
      const link = svg("a", { href: "/runs/" + node.run_id, "data-run": node.run_id });
      link.append(svg("title", {}, (node.name || node.run_id) + (node.revoked ? " (revoked)" : "")));
      const fill = node.revoked ? "#ffebe9" : node.run_id === current ? "#ddf4ff" : "#fff";
      const stroke = node.revoked ? "#cf222e" : "#57606a";
      link.append(svg("rect", { x, y, width: boxW, height: boxH, rx: 6, fill, stroke, class: node.revoked ? "revoked" : "" }));
      link.append(svg("text", { x: x + 6, y: y + 16 }, (node.name || short(node.run_id)).slice(0, 26)));
      link.append(svg("text", { x: x + 6, y: y + 31 }, (node.status || "not indexed") + (node.revoked ? " · REVOKED" : "")));
      root.append(link);
    }
    const box = document.getElementById("lineage");
    box.replaceChildren(graph.edges.length || datasets.length ? root : "No parents, children or data sources recorded.");
    if (graph.truncated) box.append(el("p", { class: "note" }, "The graph is cut at 10 generations each way."));
  }

  function checkLine(c) {
    const mark = c.ok ? el("span", { class: "ok" }, "✓ pass") : c.unchecked ? el("span", { class: "unchecked" }, "? unchecked") : el("span", { class: "bad" }, "✗ FAIL");
    return el("li", { "data-check": c.name, "data-ok": String(c.ok) }, mark, " ", el("strong", {}, c.name), ": ", c.detail);
  }

  const OUTCOMES = {
    verified: "recorded on chain and every check passed",
    mismatch: "a check failed: the file or its documents are not what was recorded",
    unknown: "no record of these weights on chain",
    revoked: "recorded, but the run, an ancestor or another record of the same weights is revoked",
    unchecked: "recorded on chain, but the run's documents could not be fetched to check them",
  };

  async function verifyDigest(weights, runId) {
    return api("/api/v1/verify/digest", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ digest: weights.weights_digest, run: runId }),
    });
  }

  async function verifyBadge(run, verdictLine) {
    const target = document.getElementById("verify");
    const list = document.getElementById("checks");
    const weights = run.final || run.checkpoints[run.checkpoints.length - 1];
    if (!weights) {
      target.className = "badge unknown";
      target.textContent = "no weights recorded";
      verdictLine.replaceChildren(el("strong", {}, "Verdict: "), "no weights recorded yet, nothing to verify.");
      return;
    }
    try {
      const report = await verifyDigest(weights, run.run_id);
      target.className = "badge " + report.outcome;
      target.textContent = report.outcome.toUpperCase() + " (re-checked on chain)";
      list.replaceChildren(...report.checks.map(checkLine));
      const failed = report.checks.filter((c) => !c.ok);
      const what = run.final ? "the final weights" : "the latest checkpoint (step " + weights.step + ")";
      verdictLine.replaceChildren(el("strong", {}, "Verdict: "), badge(report.outcome), " for " + what + " — " + (OUTCOMES[report.outcome] || report.outcome),
        failed.length ? ": " + failed.map((c) => c.name + " (" + c.detail + ")").join("; ") : " (" + report.checks.length + " checks, re-done against the chain just now).");
    } catch (error) {
      target.className = "badge unknown";
      target.textContent = "could not verify";
      verdictLine.replaceChildren(el("strong", {}, "Verdict: "), "could not be re-checked: " + (error.message || error));
      showError(error);
    }
  }

  // The bundle is a plain link; with a saved bearer token the link cannot carry it,
  // so the click fetches the bundle with the token and saves what came back.
  function tokenDownload(link, path, name) {
    link.href = path;
    link.download = name;
    link.addEventListener("click", async (event) => {
      const saved = token();
      if (!saved) return;
      event.preventDefault();
      try {
        const response = await fetch(path, { headers: { Authorization: "Bearer " + saved } });
        if (!response.ok) throw new Error(name + ": " + response.status);
        const url = URL.createObjectURL(await response.blob());
        const save = el("a", { href: url, download: name });
        document.body.append(save);
        save.click();
        save.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (error) {
        showError(error);
      }
    });
    return link;
  }

  function offerBundle(runId) {
    tokenDownload(document.getElementById("bundle"), "/api/v1/runs/" + encodeURIComponent(runId) + "/bundle", "run-" + runId.slice(2, 14) + ".provenance.json");
    document.getElementById("bundle-line").hidden = false;
  }

  // A document's CIDv1 (raw leaf, sha2-256, base32) from the sha-256 digest the chain holds:
  // what the store files a document of at most one chunk (256 KiB) under.
  function rawCid(hex) {
    const bytes = [0x01, 0x55, 0x12, 0x20];
    const digest = hex.replace(/^0x/, "");
    for (let i = 0; i < 64; i += 2) bytes.push(parseInt(digest.slice(i, i + 2), 16));
    const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    let out = "b", bits = 0, value = 0;
    for (const byte of bytes) {
      value = (value << 8) | byte;
      bits += 8;
      while (bits >= 5) { out += alphabet[(value >>> (bits - 5)) & 31]; bits -= 5; }
    }
    if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
    return out;
  }

  function drawDownloads(run) {
    const list = document.getElementById("downloads");
    const short12 = run.run_id.slice(2, 14);
    if (run.manifest_cid) {
      list.append(el("li", {}, tokenDownload(el("a", { id: "dl-manifest" }, "manifest"), "/api/v1/documents/" + encodeURIComponent(run.manifest_cid), "run-" + short12 + ".manifest.json"), " ", el("span", { class: "mono" }, run.manifest_cid)));
    }
    const all = [...run.checkpoints, ...(run.final ? [run.final] : [])];
    for (const c of all.slice(-20)) {
      const label = c.is_final ? "final" : "step-" + c.step;
      list.append(el("li", {}, tokenDownload(el("a", {}, "metrics document, " + (c.is_final ? "final weights" : "checkpoint step " + c.step)), "/api/v1/documents/" + rawCid(c.metrics_digest), "run-" + short12 + "." + label + ".metrics.json")));
    }
    if (all.length > 20) list.append(el("li", {}, "… and " + (all.length - 20) + " earlier checkpoints' documents (GET /api/v1/documents/{cid})"));
  }

  function factList(target, pairs) {
    target.replaceChildren(...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v instanceof Node ? v : String(v))]));
  }

  // A manifest value flattened to dotted keys (bounded: 400 keys, depth 6).
  function flatten(value, prefix = "", out = {}, depth = 0) {
    if (Object.keys(out).length >= 400) return out;
    if (value && typeof value === "object" && !Array.isArray(value) && depth < 6) {
      for (const [k, v] of Object.entries(value)) flatten(v, prefix ? prefix + "." + k : k, out, depth + 1);
      if (!Object.keys(value).length && prefix) out[prefix] = "{}";
    } else if (prefix) {
      out[prefix] = typeof value === "string" ? value : JSON.stringify(value);
    }
    return out;
  }

  function keyValueTable(object) {
    const flat = flatten(object);
    const keys = Object.keys(flat);
    if (!keys.length) return el("p", {}, "(none recorded)");
    return el("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "values" }, el("table", { class: "kv" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "key"), el("th", { scope: "col" }, "value"))),
      el("tbody", {}, ...keys.map((k) => el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "mono" }, String(flat[k]).slice(0, 2000)))))));
  }

  function drawManifest(run) {
    const box = document.getElementById("manifest");
    const raw = document.getElementById("manifest-raw");
    const toggle = document.getElementById("raw-toggle");
    const m = run.manifest;
    if (!m) {
      box.replaceChildren(el("p", {}, "The manifest is not in this server's store (" + run.document_state + "); its digest is on chain: " + run.chain.manifest_digest));
      toggle.hidden = true;
      return;
    }
    raw.textContent = visible(JSON.stringify(m, null, 2));
    toggle.addEventListener("click", () => {
      const open = raw.hidden;
      raw.hidden = !open;
      box.hidden = open;
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = open ? "Show structured view" : "Show raw JSON";
    });
    const part = (title, content) => el("div", { class: "manifest-part", "data-part": title }, el("h3", {}, title), content);
    const code = m.code || {};
    const env = m.environment || {};
    const dataRows = Object.entries(m.data || {}).map(([name, fp]) => el("tr", {},
      el("td", {}, named(name)), el("td", {}, (fp && fp.kind) || ""), el("td", {}, fp && typeof fp.name === "string" ? named(fp.name) : ""), el("td", { class: "mono" }, fp && (fp.cid || fp.fingerprint || fp.sha256 || fp.digest) || ""),
      el("td", { class: "num" }, fp && fp.bytes !== undefined ? fp.bytes + " B" : "")));
    const parents = (m.parents || []).map((p) => el("li", {}, p.relation + " of ", runLink(p.run_id)));
    const known = new Set(["schema", "name", "created_at", "config", "code", "environment", "data", "parents", "seed", "distributed", "digests", "sweep", "extra"]);
    const rest = Object.fromEntries(Object.entries(m).filter(([k]) => !known.has(k)));
    box.replaceChildren(
      part("Config", keyValueTable(m.config || {})),
      part("Code", keyValueTable(code)),
      part("Environment", keyValueTable(env)),
      part("Data", dataRows.length ? el("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "data sources" }, el("table", {}, el("thead", {}, el("tr", {}, ...["name", "kind", "source", "identity", "size"].map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...dataRows))) : el("p", {}, "(no data sources recorded)")),
      part("Parents", parents.length ? el("ul", {}, ...parents) : el("p", {}, "(none: trained from scratch)")),
      part("Run", keyValueTable({ schema: m.schema, created_at: m.created_at, seed: m.seed, distributed: m.distributed, sweep: m.sweep, digests: m.digests, extra: m.extra, ...rest })),
    );
  }

  function drawSummary(run, taint, verdictLine, names = {}) {
    const list = document.getElementById("summary");
    const m = run.manifest || {};
    const code = m.code || {};
    const items = [];
    const span = run.ended_at ? " to " + when(run.ended_at) + " UTC (" + duration(run.ended_at - run.started_at) + ")" : run.status === "running" ? ", still running" : "";
    items.push(el("li", {}, el("strong", {}, "Trained by "), el("span", { class: "mono", title: run.committer }, run.committer),
      " (the account that signed its transactions) from " + when(run.started_at) + " UTC" + span + ", blocks " + run.started_block + (run.chain.ended_block ? "–" + run.chain.ended_block : "") + "."));
    if (run.status === "failed") items.push(el("li", {}, el("strong", {}, "Failed: "), run.chain.failed_reason || "no reason given"));
    const data = sourcesOf(run);
    const source = (d) => {
      const label = [named(d.key), " (" + (d.kind || "?") + (d.name ? " " : ""), d.name ? named(d.name) : "", (d.id ? " " + short(d.id) : "") + ")"];
      const shown = d.cid ? [el("a", { href: "/datasets/" + encodeURIComponent(d.cid) }, ...label)] : label;
      return d.revoked ? [...shown, " ", badge("revoked")] : shown;
    };
    items.push(el("li", {}, el("strong", {}, "Data: "), ...(data.length ? data.flatMap((d, i) => [i ? "; " : "", ...source(d)]) : ["none recorded in the manifest."])));
    let codeText = "not recorded.";
    if (code.commit) codeText = (code.vcs || "git") + " commit " + code.commit.slice(0, 12) + (code.dirty ? ", with uncommitted changes (sha256 " + String(code.uncommitted_sha256 || "?").slice(0, 12) + "…)" : ", clean working tree") + ".";
    else if (Object.keys(code).length) codeText = "no commit (" + JSON.stringify(code).slice(0, 120) + ").";
    items.push(el("li", {}, el("strong", {}, "Code: "), codeText));
    const parents = run.parents || [];
    items.push(el("li", {}, el("strong", {}, "Parents: "), ...(parents.length ? parents.flatMap((p, i) => [i ? "; " : "", p.relation + " of ", runLink(p.run_id, names[p.run_id])]) : ["none (trained from scratch)."])));
    if (run.revoked) items.push(el("li", { class: "bad" }, el("strong", {}, "Revoked"), " by " + short(run.chain.revoked_by) + " in block " + run.chain.revoked_block + ": ", el("span", { class: "reason" }, run.chain.revoked_reason || "no reason given")));
    else if (taint && taint.tainted) {
      const why = [];
      if (taint.revoked_sources.length) why.push("descends from revoked ", ...taint.revoked_sources.flatMap((s, i) => [i ? ", " : "", runLink(s, names[s])]));
      for (const d of taint.revoked_data || []) {
        why.push(why.length ? "; " : "", "trained on revoked data ", named(d.key), d.run_id === run.run_id ? "" : " (through ", d.run_id === run.run_id ? "" : runLink(d.run_id, names[d.run_id]), d.run_id === run.run_id ? "" : ")", ": " + (d.reason || "no reason given"));
      }
      items.push(el("li", { class: "bad" }, el("strong", {}, "Tainted: "), ...why));
    }
    items.push(verdictLine);
    list.replaceChildren(...items);
  }

  function drawCheckpoints(run) {
    const body = document.querySelector("#checkpoints tbody");
    for (const c of [...run.checkpoints, ...(run.final ? [run.final] : [])]) {
      const metrics = el("td", { class: "metrics-cell" }, ...(c.metrics ? Object.entries(c.metrics).map(([k, v]) => el("span", {}, k + " = " + number(v))) : ["—"]));
      const result = el("span", { class: "verify-result", "aria-live": "polite" });
      const check = el("button", { type: "button", class: "verify-one" }, "verify");
      check.addEventListener("click", async () => {
        result.replaceChildren("checking…");
        try {
          const report = await verifyDigest(c, run.run_id);
          result.replaceChildren(" ", badge(report.outcome), " " + report.checks.filter((x) => x.ok).length + "/" + report.checks.length + " checks");
        } catch (error) {
          result.replaceChildren(" could not verify: " + (error.message || error));
        }
      });
      const record = el("a", { href: "/api/v1/lookup?digest=" + c.weights_digest, class: "record" }, "index record");
      // a checkpoint's Merkle proof under the run's committed root, checked by the registry
      const proof = c.is_final ? "" : el("button", { type: "button", class: "proof-one" }, "proof");
      if (proof) proof.addEventListener("click", async () => {
        result.replaceChildren("reading the proof from the chain…");
        try {
          const answer = await api("/api/v1/runs/" + run.run_id + "/checkpoints/" + c.step + "/proof");
          const entry = answer.checkpoints.find((p) => p.weights_digest === c.weights_digest.replace(/^0x/, "")) || answer.checkpoints[0];
          const ok = answer.root_matches && entry && entry.verified_by_registry;
          const save = el("a", { download: "run-" + run.run_id.slice(2, 14) + ".step-" + c.step + ".proof.json" }, "proof JSON");
          save.href = URL.createObjectURL(new Blob([JSON.stringify(answer, null, 2)], { type: "application/json" }));
          result.replaceChildren(" ", badge(ok ? "proven" : "mismatch", ok ? "verified" : "mismatch"),
            ok ? " the registry accepts its " + entry.proof.length + "-step path to root " + short(answer.checkpoint_root) + " " : " the registry does not accept it ", save);
        } catch (error) {
          result.replaceChildren(" no proof: " + (error.message || error));
        }
      });
      body.append(el("tr", { "data-step": c.is_final ? "final" : String(c.step) },
        el("td", {}, c.is_final ? "final" : c.step),
        el("td", { class: "mono" }, c.weights_cid || short(c.weights_digest)),
        metrics,
        el("td", { class: "num" }, c.block),
        el("td", { class: "mono", title: c.tx }, short(c.tx)),
        el("td", {}, check, " ", proof, proof ? " " : "", record, result)));
    }
  }

  function drawReplays(run) {
    const replays = run.replays || [];
    if (!replays.length) return;
    document.getElementById("replays-none").hidden = true;
    const table = document.getElementById("replays");
    table.hidden = false;
    const body = table.querySelector("tbody");
    for (const r of replays) {
      const report = r.report_cid
        ? el("a", { href: "/api/v1/documents/" + encodeURIComponent(r.report_cid) }, "report")
        : el("span", { class: "mono", title: "the store does not hold this report" }, short(r.report_digest));
      body.append(el("tr", {},
        el("td", { class: "mono" }, r.attester),
        el("td", { class: "num" }, r.from_step + " → " + r.to_step),
        el("td", {}, badge(r.reproduced ? "reproduced" : "diverged", r.reproduced ? "verified" : "mismatch")),
        el("td", {}, report),
        el("td", { class: "num", title: r.tx }, r.block)));
    }
  }

  async function runPage() {
    const runId = decodeURIComponent(window.location.pathname.split("/").pop());
    try {
      const run = await api("/api/v1/runs/" + encodeURIComponent(runId));
      document.title = visible("ledger — " + (run.name || run.run_id));
      document.getElementById("title").replaceChildren(named(run.name || "run"), " ", el("span", { class: "mono" }, run.run_id));
      document.getElementById("status").replaceChildren(badge(run.status));
      if (run.revoked) {
        document.getElementById("revoked").replaceChildren(badge("revoked"), " ", el("span", { class: "reason" }, run.chain.revoked_reason || ""));
      }
      const verdictLine = el("li", { id: "verdict" }, el("strong", {}, "Verdict: "), "re-checking against the chain…");
      drawSummary(run, null, verdictLine);
      const { series, axis } = seriesOf(run);
      drawCharts([{ label: run.name || short(run.run_id), series, axis }]);
      drawCheckpoints(run);
      drawReplays(run);
      drawDownloads(run);
      if (run.final) offerBundle(run.run_id);
      drawManifest(run);
      const c = run.chain;
      factList(document.getElementById("chain"), [
        ["committer", c.committer], ["manifest digest", c.manifest_digest], ["manifest CID", run.manifest_cid],
        ["started", "block " + c.started_block + ", tx " + c.started_tx], ["ended", c.ended_block ? "block " + c.ended_block + ", tx " + c.ended_tx : null],
        ["failed because", c.failed_reason], ["checkpoint root", c.checkpoint_root],
        ["revoked", c.revoked_block ? "block " + c.revoked_block + " by " + c.revoked_by + ", tx " + c.revoked_tx : null], ["revocation reason", c.revoked_reason],
      ]);
      const [graph, taint] = await Promise.all([
        api("/api/v1/runs/" + run.run_id + "/lineage"),
        api("/api/v1/runs/" + run.run_id + "/taint"),
      ]);
      drawLineage(graph, run);
      drawSummary(run, taint, verdictLine, Object.fromEntries(graph.nodes.filter((n) => n.name).map((n) => [n.run_id, n.name])));
      if (taint.tainted && !run.revoked) {
        document.getElementById("taint").replaceChildren(badge("tainted"), taint.revoked_sources.length ? " descends from a revoked run" : " trained on revoked data");
      }
      await verifyBadge(run, verdictLine);
    } catch (error) {
      showError(error);
    }
  }

  // -- compare ----------------------------------------------------------------------

  async function comparePage() {
    const ids = (new URLSearchParams(window.location.search).get("runs") || "").split(",").map((s) => s.trim()).filter(Boolean).slice(0, 8);
    if (ids.length < 2) {
      showError("Choose two to eight runs to compare: tick them in the runs table, or open /compare?runs=ID,ID.");
      return;
    }
    let runs;
    try {
      runs = await Promise.all(ids.map((id) => api("/api/v1/runs/" + encodeURIComponent(id))));
    } catch (error) {
      showError(error);
      return;
    }
    const labels = runs.map((r, i) => (r.name || short(r.run_id)) + (runs.filter((o) => o.name === r.name).length > 1 ? " #" + (i + 1) : ""));
    document.getElementById("compared").replaceChildren(...runs.map((r, i) => {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = PALETTE[i % PALETTE.length];
      return el("li", {}, swatch, el("a", { href: "/runs/" + r.run_id }, named(labels[i])), " ", badge(r.status), r.revoked ? " " : "", r.revoked ? badge("revoked") : "");
    }));
    drawCharts(runs.map((r, i) => Object.assign({ label: labels[i] }, seriesOf(r))));

    const rows = {};
    runs.forEach((r, i) => {
      const m = r.manifest || {};
      const flat = flatten({ config: m.config, code: m.code, data: m.data, environment: m.environment, seed: m.seed, parents: m.parents, distributed: m.distributed });
      for (const [k, v] of Object.entries(flat)) (rows[k] = rows[k] || Array(runs.length).fill(undefined))[i] = v;
    });
    const head = document.querySelector("#diff thead");
    head.replaceChildren(el("tr", {}, el("th", { scope: "col" }, "key"), ...labels.map((l) => el("th", { scope: "col" }, named(l)))));
    const body = document.querySelector("#diff tbody");
    const only = document.getElementById("only-diff");
    const order = ["config", "data", "code", "seed", "parents", "distributed", "environment"];
    const keys = Object.keys(rows).sort((a, b) => (order.indexOf(a.split(".")[0]) - order.indexOf(b.split(".")[0])) || a.localeCompare(b));
    function draw() {
      let differing = 0;
      body.replaceChildren(...keys.flatMap((k) => {
        const values = rows[k];
        const differs = values.some((v) => v !== values[0]);
        if (differs) differing += 1;
        if (only.checked && !differs) return [];
        return [el("tr", { class: differs ? "differs" : "", "data-key": k }, el("td", { class: "mono" }, k),
          ...values.map((v) => el("td", { class: "mono" }, v === undefined ? "—" : String(v).slice(0, 300))))];
      }));
      document.getElementById("diff-count").textContent = differing + " of " + keys.length + " values differ";
    }
    only.addEventListener("change", draw);
    draw();
  }

  // -- verify a file or a folder --------------------------------------------------

  // Every file under a dropped folder entry, each with its path inside that folder.
  async function folderFiles(root) {
    const found = [];
    async function walk(dir, prefix) {
      const reader = dir.createReader();
      for (;;) {  // readEntries answers in batches until an empty one
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const entry of batch) {
          if (entry.isDirectory) await walk(entry, prefix + entry.name + "/");
          else if (entry.isFile) found.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path: prefix + entry.name });
        }
      }
    }
    await walk(root, "");
    return found;
  }

  // A chosen folder's files: webkitRelativePath starts with the folder's own name.
  function chosenFolder(list) {
    return [...list].map((file) => ({ file, path: file.webkitRelativePath.split("/").slice(1).join("/") }));
  }

  function verifyPage() {
    const form = document.getElementById("verify-form");
    const drop = document.getElementById("drop");
    const input = document.getElementById("file");
    const folderInput = document.getElementById("folder");
    const send = document.getElementById("send");
    const progress = document.getElementById("progress");
    const phase = document.getElementById("phase");
    let file = null;
    let folder = null;  // {name, files: [{file, path}]}

    function chosenText() {
      if (file) return visible(file.name + " (" + file.size + " bytes)");
      if (folder) {
        const bytes = folder.files.reduce((total, f) => total + f.file.size, 0);
        return visible("folder " + folder.name + " (" + folder.files.length + " files, " + bytes + " bytes)");
      }
      return "";
    }

    function choose(picked, pickedFolder) {
      file = picked;
      folder = pickedFolder || null;
      send.disabled = !file && !folder;
      document.getElementById("chosen").textContent = chosenText();
      document.getElementById("message").textContent = "";
    }

    function chooseFolder(name, files) {
      if (!files.length) {
        choose(null);
        showError("The folder " + visible(name) + " holds no files.");
        return;
      }
      choose(null, { name, files });
    }

    input.addEventListener("change", () => choose(input.files[0] || null));
    folderInput.addEventListener("change", () => {
      const files = chosenFolder(folderInput.files);
      const name = folderInput.files.length ? folderInput.files[0].webkitRelativePath.split("/")[0] : "";
      chooseFolder(name, files);
    });
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", async (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const items = [...(event.dataTransfer.items || [])];
      const entry = items.length && items[0].webkitGetAsEntry ? items[0].webkitGetAsEntry() : null;
      const dropped = event.dataTransfer.files[0] || null;  // read before the walk: the list empties after the event
      if (entry && entry.isDirectory) {
        phase.textContent = "reading the folder…";
        try {
          chooseFolder(entry.name, await folderFiles(entry));
          phase.textContent = "";
        } catch (error) {
          phase.textContent = "";
          showError("the folder could not be read: " + (error.message || error));
        }
        return;
      }
      choose(dropped);
    });

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!file && !folder) return;
      const data = new FormData();
      if (folder) for (const f of folder.files) data.append("files", f.file, f.path);
      else data.append("file", file, file.name);
      const run = document.getElementById("run").value.trim();
      if (run) data.append("run", run);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", folder ? "/api/v1/verify/folder" : "/api/v1/verify");
      xhr.setRequestHeader("Accept", "application/json");
      const saved = token();
      if (saved) xhr.setRequestHeader("Authorization", "Bearer " + saved);
      progress.value = 0;
      phase.textContent = "uploading…";
      send.disabled = true;
      document.getElementById("result").hidden = true;
      document.getElementById("message").textContent = "";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) {
          progress.value = Math.round((e.loaded / e.total) * 100);
          phase.textContent = "uploading… " + progress.value + "%";
        }
      });
      xhr.upload.addEventListener("load", () => {
        progress.value = 100;
        phase.textContent = "uploaded; the server is hashing the " + (folder ? "folder" : "file") + " and checking the chain…";
      });
      xhr.addEventListener("error", () => { send.disabled = false; phase.textContent = ""; showError("the upload failed (network error)"); });
      xhr.addEventListener("load", () => {
        send.disabled = false;
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (error) { /* shown below */ }
        if (xhr.status !== 200 || !body) {
          phase.textContent = "";
          showError(body ? (body.title || xhr.status) + ": " + (body.detail || "") + (body.hint ? "\n" + body.hint : "") : "the server answered " + xhr.status);
          return;
        }
        phase.textContent = "done";
        showReport(body);
      });
      xhr.send(data);
    });

    function showReport(report) {
      document.getElementById("result").hidden = false;
      const outcome = document.getElementById("outcome");
      outcome.className = "badge " + report.outcome;
      outcome.textContent = report.outcome.toUpperCase();
      document.getElementById("outcome-text").textContent = OUTCOMES[report.outcome] || "";
      factList(document.getElementById("facts"), [
        ["run", report.run_id ? runLink(report.run_id) : null],
        ["matched by", report.matched_by], ["record", report.is_final ? "final weights" : report.step !== null && report.step !== undefined ? "checkpoint step " + report.step : null],
        ["file CID", report.file_cid], ["tensor root", report.tensor_root],
        ["first recorded", report.origin ? "block " + report.origin.block + " by " + report.origin.committer : null],
        ["other runs with these weights", report.claimants && report.claimants.length ? report.claimants.map((c) => c.run_id).join(", ") : null],
      ]);
      document.getElementById("checks").replaceChildren(...report.checks.map(checkLine));
    }
  }

  // -- datasets (the index's datasets API, where this server has it) -----------------

  function bytesText(n) {
    if (n === null || n === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }

  function noDatasets(error) {
    // a route this server does not have is Starlette's own 404 (title HTTPError)
    showError(error.status === 404 && error.title === "HTTPError"
      ? "This ledger server has no datasets API (GET /api/v1/datasets): its version predates dataset tracking."
      : error);
  }

  function datasetLink(d) {
    return el("a", { href: "/datasets/" + encodeURIComponent(d.cid) }, named(d.name || d.key || short(d.cid)));
  }

  function datasetsPage() {
    const body = document.querySelector("#datasets tbody");
    const more = document.getElementById("more");
    let cursor = null;
    async function load() {
      const query = new URLSearchParams({ limit: "100" });
      if (cursor) query.set("cursor", cursor);
      try {
        const page = await api("/api/v1/datasets?" + query);
        for (const d of page.datasets) {
          body.append(el("tr", { class: d.revoked ? "revoked" : "", "data-dataset": d.cid },
            el("td", { class: "name-cell" }, datasetLink(d)),
            el("td", {}, d.kind),
            el("td", { class: "mono" }, d.cid),
            el("td", { class: "num" }, bytesText(d.bytes)),
            el("td", { class: "num" }, d.runs),
            el("td", { class: "name-cell" }, d.revoked ? badge("revoked") : "", d.revocation ? " " + d.revocation.reason : "")));
        }
        if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "No run's manifest names a dataset yet.")));
        cursor = page.next_cursor;
        more.hidden = !cursor;
      } catch (error) {
        noDatasets(error);
      }
    }
    more.addEventListener("click", load);
    load();
  }

  async function datasetPage() {
    const cid = decodeURIComponent(window.location.pathname.split("/").pop());
    try {
      const d = await api("/api/v1/datasets/" + encodeURIComponent(cid));
      document.title = visible("ledger — dataset " + (d.name || d.cid));
      document.getElementById("title").replaceChildren("Dataset ", named(d.name || short(d.cid)));
      document.getElementById("state").replaceChildren(d.revoked ? badge("revoked") : badge("in use", "finalized"),
        d.revoked ? " every model trained on it, and every model derived from those, is tainted" : "");
      const r = d.revocation;
      factList(document.getElementById("facts"), [
        ["CID", d.cid], ["digest (on chain)", d.digest], ["kind", d.kind], ["size", bytesText(d.bytes)], ["runs", d.runs],
        ["revoked", r ? "block " + r.block + " by " + r.revoker + ", tx " + r.tx : null], ["reason", r ? r.reason : null],
      ]);
      const usedBy = document.querySelector("#used-by tbody");
      usedBy.replaceChildren(...d.used_by.map((u) => el("tr", { "data-run": u.run_id, class: u.revoked ? "revoked" : "" },
        el("td", { class: "name-cell" }, runLink(u.run_id, u.name)),
        el("td", {}, u.status ? badge(u.status) : "not indexed", u.revoked ? " " : "", u.revoked ? badge("revoked") : ""),
        el("td", {}, u.keys.join(", ")),
        el("td", { class: "mono" }, u.final_weights_digest ? short(u.final_weights_digest) : "—"))));
      if (!d.used_by.length) usedBy.append(el("tr", {}, el("td", { colspan: "4" }, "No run names it directly.")));
      const desc = document.querySelector("#descendants tbody");
      desc.replaceChildren(...d.descendants.map((u) => el("tr", { "data-run": u.run_id, class: d.revoked ? "tainted" : "" },
        el("td", { class: "name-cell" }, runLink(u.run_id, u.name)),
        el("td", {}, u.status ? badge(u.status) : "not indexed", d.revoked ? " " : "", d.revoked ? badge("tainted") : ""),
        el("td", {}, runLink(u.via)),
        el("td", { class: "num" }, u.generation),
        el("td", { class: "mono" }, u.final_weights_digest ? short(u.final_weights_digest) : "—"))));
      if (!d.descendants.length) desc.append(el("tr", {}, el("td", { colspan: "5" }, "No model derives from those runs.")));
      if (d.truncated) desc.append(el("tr", {}, el("td", { colspan: "5" }, "… cut at the API's limit.")));
      const parts = document.getElementById("parts");
      parts.replaceChildren(
        ...d.part_of.map((c) => el("li", {}, "part of ", el("a", { href: "/datasets/" + encodeURIComponent(c), class: "mono" }, c))),
        ...d.parts.map((p) => el("li", {}, "holds ", datasetLink(p), p.revoked ? " " : "", p.revoked ? badge("revoked") : "")));
      if (!parts.children.length) parts.append(el("li", {}, "none"));
    } catch (error) {
      noDatasets(error);
    }
  }

  return { runsPage, runPage, comparePage, verifyPage, datasetsPage, datasetPage, visible, folderFiles };
})();

// No inline script (the Content-Security-Policy forbids it): the page says which it is.
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "runs") ledger.runsPage();
  else if (page === "run") ledger.runPage();
  else if (page === "compare") ledger.comparePage();
  else if (page === "verify") ledger.verifyPage();
  else if (page === "datasets") ledger.datasetsPage();
  else if (page === "dataset") ledger.datasetPage();
});
