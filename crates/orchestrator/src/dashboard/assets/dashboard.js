// The dashboard's page: everything it shows comes from the server-sent events of /api/events
// (the JSON of /api/experiments and /api/live, pushed on every change). Text from the run (the
// agent's descriptions, logs, diffs) is only ever set as textContent, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const COLORS = { keep: "#2ca02c", discard: "#999999", stale: "#999999", crash: "#d62728", best: "#1f77b4" };
const RUN_COLORS = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const state = { experiments: null, live: null, open: null, tab: "diff", progress: null, flights: new Map(), best: null, detailChart: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

const fixed = (v, digits = 6) => (v == null ? "-" : v.toFixed(digits));
const signed = (v, digits = 6) => (v == null ? "-" : (v > 0 ? "+" : "") + v.toFixed(digits));
const count = (v) => (v == null ? "-" : v.toLocaleString("en-US"));
function hours(seconds) {
  if (seconds == null) return "-";
  return seconds >= 3600 ? (seconds / 3600).toFixed(1) + " h" : seconds >= 60 ? (seconds / 60).toFixed(1) + " min" : seconds.toFixed(0) + " s";
}

// --- totals: where the night stands, and what it spent ---------------------------------------

function renderTotals(data) {
  const s = data.summary;
  const gain = s.improvement_pct == null ? "" : ` (${signed(-s.improvement_pct, 2)}%)`;
  const cost = s.cost_usd == null ? null : "$" + s.cost_usd.toFixed(2);
  const items = [
    ["experiments", s.experiments, `${s.keeps} kept, ${s.discards} discarded, ${s.crashes} crashed`],
    ["best val_bpb", fixed(s.best_bpb), `baseline ${fixed(s.baseline_bpb)}${gain}`],
    ["noise floor σ", fixed(s.sigma), "val_bpb between runs of one program"],
    ["budget per run", data.budget_seconds == null ? "-" : hours(data.budget_seconds), "training seconds"],
    ["training", hours(s.training_seconds), `+ ${hours(s.overhead_seconds)} building, starting, evaluating`],
    ["thinking", hours(s.think_seconds), "the agent's proposals"],
    ...confirmed(s.confirm),
    [cost == null ? "agent tokens" : "cost", cost ?? count(s.agent_tokens), cost == null ? "no prices recorded" : `${count(s.agent_tokens)} tokens`],
  ];
  $("#totals").replaceChildren(...items.map(([name, value, note]) =>
    el("div", { "data-total": name }, el("span", {}, name), el("b", {}, value), el("span", {}, note))));
}

// `orchestrator confirm`'s latest word on the best, when there is one.
function confirmed(confirm) {
  const gain = confirm?.gain;
  if (!gain) return [];
  return [["confirmed gain", `${signed(gain.mean)}`, `95% [${fixed(gain.low)}, ${fixed(gain.high)}], ${gain.pairs} pairs`]];
}

// --- the progress plot: every experiment, the best so far and its noise band ------------------

function progressData(rows) {
  const scored = rows.map((r) => r.val_bpb).filter((v) => v != null);
  const kept = rows.filter((r) => r.status === "keep" && r.val_bpb != null).map((r) => r.val_bpb);
  const low = Math.min(...scored), highKept = kept.length ? Math.max(...kept) : Math.max(...scored);
  const sigma = Math.max(0, ...rows.map((r) => r.noise_sigma ?? 0));
  // Far-off discards would squash the part that matters: they, and crashes, sit on the top edge.
  const span = Math.max(highKept - low, 4 * sigma, 1e-4 * Math.abs(highKept), 1e-6);
  const top = Math.min(Math.max(...scored), highKept + 0.6 * span) + 0.12 * span;
  const edge = top - 0.03 * (top - low);
  const only = (status) => rows.map((r) => (r.status === status || (status === "discard" && r.status === "stale")) && r.val_bpb != null ? Math.min(r.val_bpb, edge) : null);
  const band = (sign) => rows.map((r) => (r.best_bpb == null || r.noise_sigma == null ? null : r.best_bpb + sign * 2 * r.noise_sigma));
  const seqs = rows.map((r) => r.seq);
  return {
    // At least ten experiments wide, so that the first ones do not fill the plot.
    x: [Math.min(...seqs) - 0.5, Math.max(...seqs, Math.min(...seqs) + 9) + 0.5],
    y: [low - 0.1 * span - 2 * sigma, top],
    data: [
      seqs,
      rows.map((r) => r.best_bpb),
      band(+1),
      band(-1),
      only("keep"),
      only("discard"),
      rows.map((r) => (r.status === "crash" ? edge : null)),
    ],
  };
}

function points(label, color) {
  return { label, stroke: color, fill: color, paths: () => null, points: { show: true, size: 7, fill: color, stroke: color } };
}

function renderProgress(rows) {
  const box = $("#progress");
  if (!rows.some((r) => r.val_bpb != null)) {
    box.replaceChildren(el("p", { class: "quiet" }, "no score yet: the baseline is running"));
    state.progress?.destroy();
    state.progress = null;
    return;
  }
  // Drawn anew on each record (one every few minutes): a hundred points take a millisecond.
  const { x, y, data } = progressData(rows);
  // Ticks a tenth of the span apart, with enough decimals to tell them apart.
  const decimals = Math.min(6, Math.max(2, Math.ceil(-Math.log10((y[1] - y[0]) / 10))));
  state.progress?.destroy();
  box.replaceChildren();
  const stepped = { paths: uPlot.paths.stepped({ align: 1 }), spanGaps: true, points: { show: false } };
  const opts = {
    width: box.clientWidth || 1000,
    height: 340,
    scales: { x: { time: false, range: () => x }, y: { range: () => y } },
    axes: [{ label: "experiment", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { label: "val_bpb (lower is better)", size: 70, values: (u, ticks) => ticks.map((t) => t.toFixed(decimals)) }],
    legend: { live: false },
    series: [
      { label: "experiment" },
      { label: "best", stroke: COLORS.best, width: 2, ...stepped },
      { label: "best + 2σ", stroke: "rgba(31,119,180,0.25)", ...stepped },
      { label: "best − 2σ", stroke: "rgba(31,119,180,0.25)", ...stepped },
      points("keep", COLORS.keep),
      points("discard", COLORS.discard),
      points("crash (top edge)", COLORS.crash),
    ],
    bands: [{ series: [2, 3], fill: "rgba(31,119,180,0.12)" }],
  };
  state.progress = new uPlot(opts, data, box);
}

// --- the experiments table, each row's diff and log a click away ------------------------------

function renderTable(rows) {
  const costs = rows.some((r) => r.cost_usd != null);
  $("#spend-head").textContent = costs ? "cost" : "tokens";
  const body = $("#experiments tbody");
  const trs = [];
  for (const r of [...rows].reverse()) {
    const spend = costs ? (r.cost_usd == null ? "-" : "$" + r.cost_usd.toFixed(3)) : count(r.agent_tokens);
    const tr = el("tr", { class: "experiment" + (state.open === r.seq ? " open" : ""), "data-seq": r.seq },
      el("td", { class: "num" }, r.seq),
      el("td", { class: r.status }, r.status),
      el("td", { class: "num" }, fixed(r.val_bpb)),
      el("td", { class: "num" }, signed(r.delta)),
      el("td", { class: "num" }, r.steps ?? "-"),
      el("td", {}, r.rule ?? r.reason ?? ""),
      el("td", {}, r.description),
      el("td", { class: "num" }, spend));
    tr.addEventListener("click", () => toggle(r.seq));
    trs.push(tr);
    if (state.open === r.seq) trs.push(detailRow(r));
  }
  body.replaceChildren(...trs);
}

function detailRow(r) {
  const pre = el("pre", { id: "detail-text" }, "loading…");
  const tabs = el("div", { class: "tabs" }, ...["diff", "log", "curves"].map((tab) => {
    const button = el("button", { class: tab === state.tab ? "active" : "", "data-tab": tab }, tab);
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      state.tab = tab;
      renderTable(state.experiments.experiments);
    });
    return button;
  }));
  const facts = [r.trials.length ? `${r.trials.length} run(s)` : "", r.test_bpb != null ? `test_bpb ${fixed(r.test_bpb)}` : "",
    r.commit.slice(0, 10), ...r.flags].filter(Boolean).join(" · ");
  loadDetail(r.seq, state.tab, pre);
  return el("tr", { class: "detail", "data-detail": r.seq }, el("td", { colSpan: 8 }, el("div", { class: "quiet" }, facts), tabs, pre));
}

async function loadDetail(seq, tab, pre) {
  state.detailChart?.destroy();
  state.detailChart = null;
  if (tab === "curves") return loadCurves(seq, pre);
  const response = await fetch(`/api/experiments/${seq}/${tab}`);
  const text = await response.text();
  pre.replaceChildren();
  pre.dataset.loaded = tab;
  for (const line of text.split("\n")) {
    const kind = tab !== "diff" ? "" : line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
    pre.append(kind ? el("span", { class: kind }, line) : line, "\n");
  }
}

// Each run's training curve, the best's re-runs beside it dashed.
async function loadCurves(seq, pre) {
  const record = await (await fetch(`/api/experiments/${seq}`)).json();
  const runs = [
    ...record.trials.map((t, i) => ({ label: `run ${i} (seed ${t.seed})`, curve: t.curve, dash: null })),
    ...record.best_trials.map((t, i) => ({ label: `best, run ${i}`, curve: t.curve, dash: [6, 4] })),
  ].filter((r) => r.curve.length);
  if (!runs.length) {
    pre.textContent = "no curve recorded: no run, or recorded before runs kept their curves";
    pre.dataset.loaded = "curves";
    return;
  }
  const box = el("div", { class: "chart", id: "detail-chart" });
  pre.replaceWith(box);
  state.detailChart = lossChart(box, runs, state.experiments?.budget_seconds, box.parentNode.clientWidth - 24);
  box.dataset.loaded = "curves";
}

function toggle(seq) {
  state.open = state.open === seq ? null : seq;
  renderTable(state.experiments.experiments);
}

// --- the experiments in flight, each run's training curve as it comes ------------------------

// A chart of training loss over counted seconds, one series per curve in `runs`
// ({label, curve, dash}); the x axis spans the budget.
function lossChart(box, runs, budget, width) {
  const opts = {
    width: Math.max(300, width || 1000),
    height: 200,
    scales: { x: { time: false, range: (u, min, max) => [0, Math.max(max ?? 0, budget ?? 0)] } },
    axes: [{ label: "training seconds" }, { label: "training loss", size: 60 }],
    legend: { live: false },
    series: [{ label: "seconds" }, ...runs.map((run, i) => ({
      label: run.label, stroke: run.dash ? "#777777" : RUN_COLORS[i % RUN_COLORS.length], width: 2, dash: run.dash ?? undefined, spanGaps: true,
    }))],
  };
  return new uPlot(opts, curveData(runs), box);
}

function curveData(runs) {
  const curves = runs.map((run) => {
    const curve = run.curve.filter((p) => p.loss != null);
    return [curve.map((p) => p.seconds), curve.map((p) => p.loss)];
  });
  return uPlot.join(curves);
}

// An experiment's runs in flight, and the best's first run for comparison.
function flightRuns(flight) {
  const runs = flight.runs.map((run) => ({ label: `run ${run.index}`, curve: run.curve, dash: null }));
  if (state.best?.curve.length) runs.push({ label: `best (#${state.best.seq})`, curve: state.best.curve, dash: [6, 4] });
  return runs;
}

function flightText(flight, budget) {
  const parts = flight.runs.map((run) => {
    const last = run.curve[run.curve.length - 1];
    if (!last) return `run ${run.index}: starting`;
    const share = budget ? ` (${Math.min(100, (100 * last.seconds) / budget).toFixed(0)}%)` : "";
    return `run ${run.index}: ${last.seconds.toFixed(0)} s${share}, step ${last.step}, loss ${fixed(last.loss, 4)}`;
  });
  return parts.length ? parts.join(" · ") : "thinking or building: no run yet";
}

function renderLive(live) {
  const budget = state.experiments?.budget_seconds;
  const box = $("#live");
  const seen = new Set(live.in_flight.map((f) => f.seq));
  for (const [seq, card] of state.flights) {
    if (!seen.has(seq)) {
      card.chart?.destroy();
      state.flights.delete(seq);
    }
  }
  if (!live.in_flight.length) {
    box.replaceChildren(el("p", { class: "quiet" }, "nothing in flight"));
    return;
  }
  const cards = live.in_flight.map((flight) => {
    const runs = flightRuns(flight);
    let card = state.flights.get(flight.seq);
    if (!card || card.series !== runs.length) {
      card?.chart?.destroy();
      card = newFlight(flight, runs, budget);
      state.flights.set(flight.seq, card);
    } else if (card.chart) {
      card.chart.setData(curveData(runs));
    }
    card.status.textContent = flightText(flight, budget);
    return card.node;
  });
  box.replaceChildren(...cards);
}

function newFlight(flight, runs, budget) {
  const status = el("div", { class: "quiet" });
  const chartBox = el("div", { class: "chart" });
  const node = el("div", { class: "flight", "data-seq": flight.seq },
    el("h3", {}, `#${flight.seq} ${flight.description}`), status, chartBox);
  const card = { node, status, series: runs.length, chart: null };
  if (flight.runs.length) card.chart = lossChart(chartBox, runs, budget, ($("#live").clientWidth || 1000) - 24);
  return card;
}

// The best's curve, the reference the runs in flight are drawn against, when the best changed.
async function loadBest(data) {
  const seq = data.summary.best_seq;
  if (seq == null || state.best?.seq === seq) return;
  const record = await (await fetch(`/api/experiments/${seq}`)).json();
  state.best = { seq, curve: record.trials[0]?.curve ?? [] };
  if (state.live) renderLive(state.live);
}

// --- the events ------------------------------------------------------------------------------

function connect() {
  const events = new EventSource("/api/events");
  const connection = $("#connection");
  events.onopen = () => { connection.textContent = "live"; connection.className = "connection live"; };
  events.onerror = () => { connection.textContent = "disconnected, retrying"; connection.className = "connection lost"; };
  events.addEventListener("experiments", (event) => {
    const data = JSON.parse(event.data);
    state.experiments = data;
    $("#tag").textContent = data.tag;
    document.title = `autoresearch ${data.tag}`;
    $("#failure").hidden = true;
    renderTotals(data);
    renderProgress(data.experiments);
    renderTable(data.experiments);
    if (state.live) renderLive(state.live);
    loadBest(data);
    if (!window.dashboardReady) window.dashboardReady = performance.now();
  });
  events.addEventListener("live", (event) => {
    state.live = JSON.parse(event.data);
    renderLive(state.live);
    window.liveUpdates = (window.liveUpdates ?? 0) + 1;
  });
  events.addEventListener("end", () => {
    events.close();
    connection.textContent = "the run has ended";
    connection.className = "connection";
  });
  events.addEventListener("failure", (event) => {
    const failure = $("#failure");
    failure.textContent = event.data;
    failure.hidden = false;
  });
}

window.addEventListener("resize", () => {
  const width = $("#progress").clientWidth;
  state.progress?.setSize({ width, height: 340 });
});
connect();
