// The ledger web page: reads the JSON API, draws tables and inline SVG. No build step.
"use strict";

const ledger = (() => {
  const SVG = "http://www.w3.org/2000/svg";

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
    const body = await response.json();
    if (!response.ok) {
      throw new Error((body.title || response.status) + ": " + (body.detail || "") + (body.hint ? "\n" + body.hint : ""));
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
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
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

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || text) }, text);
  }

  function showError(error) {
    document.getElementById("message").textContent = visible(error.message || error);
  }

  // -- runs table -------------------------------------------------------------------

  function runsPage() {
    const form = document.getElementById("filter-form");
    const input = document.getElementById("filter");
    const body = document.querySelector("#runs tbody");
    const more = document.getElementById("more");
    const params = new URLSearchParams(window.location.search);
    input.value = params.get("q") || "";
    let cursor = null;

    async function load(reset) {
      document.getElementById("message").textContent = "";
      const query = new URLSearchParams({ limit: "50" });
      if (input.value.trim()) query.set("q", input.value.trim());
      if (!reset && cursor) query.set("cursor", cursor);
      try {
        const page = await api("/api/v1/runs?" + query);
        if (reset) body.replaceChildren();
        for (const run of page.runs) {
          const row = el("tr", { class: run.revoked ? "revoked" : "", "data-run": run.run_id },
            el("td", {}, el("a", { href: "/runs/" + run.run_id, class: "mono" }, short(run.run_id))),
            el("td", { class: "name-cell" }, named(run.name || "—")),
            el("td", {}, badge(run.status), " ", run.revoked ? badge("revoked") : ""),
            el("td", { class: "mono" }, short(run.committer)),
            el("td", {}, when(run.started_at)),
            el("td", { class: "name-cell" }, run.sweep_id ? run.sweep_id + (run.sweep_trial !== null ? " #" + run.sweep_trial : "") : ""),
            el("td", {}, run.checkpoint_count));
          body.append(row);
        }
        cursor = page.next_cursor;
        more.hidden = !cursor;
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
    load(true);
  }

  // -- run page ---------------------------------------------------------------------

  function chart(name, points, axis) {
    const width = 320, height = 180, pad = 36;
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const sx = (x) => pad + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - 2 * pad);
    const sy = (y) => height - pad + -((y - y0) / (y1 - y0)) * (height - 2 * pad);
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-metric": name, role: "img" });
    root.append(svg("title", {}, name + " over " + axis + "s"));
    root.append(svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#8c959f" }));
    root.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, stroke: "#8c959f" }));
    root.append(svg("text", { x: pad, y: 14 }, name));
    root.append(svg("text", { x: 2, y: pad + 4 }, y1.toPrecision(3)));
    root.append(svg("text", { x: 2, y: height - pad }, y0.toPrecision(3)));
    root.append(svg("text", { x: pad, y: height - 12 }, axis + " " + x0));
    root.append(svg("text", { x: width - pad - 40, y: height - 12 }, axis + " " + x1));
    root.append(svg("polyline", {
      fill: "none", stroke: "#0969da", "stroke-width": 2,
      points: points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
    }));
    for (const p of points) root.append(svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.5, fill: "#0969da" }));
    return el("div", { class: "chart" }, root);
  }

  function drawCharts(run) {
    const series = {};
    const byEpoch = run.checkpoints.length > 0 && run.checkpoints.every((c) => c.metrics && typeof c.metrics.epoch === "number");
    for (const c of run.checkpoints) {
      if (!c.metrics) continue;
      const x = byEpoch ? c.metrics.epoch : c.step;
      for (const [key, value] of Object.entries(c.metrics)) {
        if (key === "epoch" || typeof value !== "number") continue;
        (series[key] = series[key] || []).push([x, value]);
      }
    }
    const box = document.getElementById("charts");
    box.replaceChildren();
    const names = Object.keys(series).sort();
    if (!names.length) box.append("No checkpoint metrics in the store.");
    for (const name of names) box.append(chart(name, series[name].sort((a, b) => a[0] - b[0]), byEpoch ? "epoch" : "step"));
  }

  function drawLineage(graph, current) {
    const byGeneration = {};
    for (const node of graph.nodes) (byGeneration[node.generation] = byGeneration[node.generation] || []).push(node);
    const generations = Object.keys(byGeneration).map(Number).sort((a, b) => a - b);
    const colWidth = 250, rowHeight = 56, boxW = 160, boxH = 38;
    const rows = Math.max(...generations.map((g) => byGeneration[g].length));
    const width = generations.length * colWidth + 20, height = rows * rowHeight + 20;
    const place = {};
    generations.forEach((g, col) => byGeneration[g].forEach((node, row) => {
      place[node.run_id] = { x: 10 + col * colWidth, y: 10 + row * rowHeight, node };
    }));
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lineage-graph" });
    for (const edge of graph.edges) {
      const a = place[edge.parent], b = place[edge.child];
      if (!a || !b) continue;
      root.append(svg("line", { x1: a.x + boxW, y1: a.y + boxH / 2, x2: b.x, y2: b.y + boxH / 2, stroke: "#57606a" }));
      root.append(svg("text", { x: (a.x + boxW + b.x) / 2, y: (a.y + b.y) / 2 + boxH / 2 - 5, "text-anchor": "middle" }, edge.relation));
    }
    for (const { x, y, node } of Object.values(place)) {
      const link = svg("a", { href: "/runs/" + node.run_id });
      const fill = node.revoked ? "#ffebe9" : node.run_id === current ? "#ddf4ff" : "#fff";
      const stroke = node.revoked ? "#cf222e" : "#57606a";
      link.append(svg("rect", { x, y, width: boxW, height: boxH, rx: 6, fill, stroke, class: node.revoked ? "revoked" : "" }));
      link.append(svg("text", { x: x + 6, y: y + 15 }, (node.name || short(node.run_id)).slice(0, 24)));
      link.append(svg("text", { x: x + 6, y: y + 30 }, (node.status || "not indexed") + (node.revoked ? " · REVOKED" : "")));
      root.append(link);
    }
    const box = document.getElementById("lineage");
    box.replaceChildren(graph.edges.length ? root : "No parents or children.");
  }

  async function verifyBadge(run) {
    const target = document.getElementById("verify");
    const list = document.getElementById("checks");
    const weights = run.final || run.checkpoints[run.checkpoints.length - 1];
    if (!weights) {
      target.className = "badge unknown";
      target.textContent = "no weights recorded";
      return;
    }
    try {
      const report = await api("/api/v1/verify/digest", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ digest: weights.weights_digest, run: run.run_id }),
      });
      target.className = "badge " + report.outcome;
      target.textContent = report.outcome.toUpperCase() + " (re-checked on chain)";
      list.replaceChildren(...report.checks.map((c) => el("li", {}, (c.ok ? "✓ " : "✗ ") + c.name + ": " + c.detail)));
    } catch (error) {
      target.className = "badge unknown";
      target.textContent = "could not verify";
      showError(error);
    }
  }

  // The bundle is a plain link; with a saved bearer token the link cannot carry it,
  // so the click fetches the bundle with the token and saves what came back.
  function offerBundle(runId) {
    const link = document.getElementById("bundle");
    const path = "/api/v1/runs/" + encodeURIComponent(runId) + "/bundle";
    const name = "run-" + runId.slice(2, 14) + ".provenance.json";
    link.href = path;
    link.download = name;
    link.addEventListener("click", async (event) => {
      const saved = token();
      if (!saved) return;
      event.preventDefault();
      try {
        const response = await fetch(path, { headers: { Authorization: "Bearer " + saved } });
        if (!response.ok) throw new Error("bundle: " + response.status);
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
    document.getElementById("bundle-line").hidden = false;
  }

  async function runPage() {
    const runId = decodeURIComponent(window.location.pathname.split("/").pop());
    try {
      const run = await api("/api/v1/runs/" + encodeURIComponent(runId));
      document.title = visible("ledger — " + (run.name || run.run_id));
      document.getElementById("title").replaceChildren(named(run.name || "run"), " " + run.run_id);
      document.getElementById("status").replaceChildren(badge(run.status));
      if (run.revoked) {
        document.getElementById("revoked").replaceChildren(
          badge("revoked"), " ", el("span", { class: "reason" }, run.chain.revoked_reason || ""));
      }
      drawCharts(run);
      const body = document.querySelector("#checkpoints tbody");
      for (const c of [...run.checkpoints, ...(run.final ? [run.final] : [])]) {
        body.append(el("tr", {},
          el("td", {}, c.is_final ? "final" : c.step),
          el("td", { class: "mono" }, c.weights_cid || short(c.weights_digest)),
          el("td", { class: "mono" }, c.metrics ? JSON.stringify(c.metrics) : "—"),
          el("td", {}, c.block),
          el("td", { class: "mono" }, short(c.tx))));
      }
      if (run.final) offerBundle(run.run_id);
      document.getElementById("chain").textContent = visible(JSON.stringify(run.chain, null, 2));
      document.getElementById("manifest").textContent = run.manifest ? visible(JSON.stringify(run.manifest, null, 2)) : "(not in the store)";
      const [graph, taint] = await Promise.all([
        api("/api/v1/runs/" + run.run_id + "/lineage"),
        api("/api/v1/runs/" + run.run_id + "/taint"),
      ]);
      drawLineage(graph, run.run_id);
      if (taint.tainted && !run.revoked) {
        document.getElementById("taint").replaceChildren(badge("tainted"), " descends from a revoked run");
      }
      await verifyBadge(run);
    } catch (error) {
      showError(error);
    }
  }

  return { runsPage, runPage, visible };
})();

// No inline script (the Content-Security-Policy forbids it): the page says which it is.
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "runs") ledger.runsPage();
  else if (page === "run") ledger.runPage();
});
