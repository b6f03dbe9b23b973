// The MANTA task monitor page. It reads the monitor API (see node/monitor/__init__.py) from
// whoever serves it: a miner (its own stream) or `manta task monitor` (the whole group).
//
// Data model: one Member per reporting miner, holding its merged snapshot and its training
// points keyed by step. Applying an update twice changes nothing, so the page can reload the
// history whenever the stream reconnects (a daemon restart) and replay what arrived meanwhile.

import { CpuChart, ParetoChart, StepChart } from "./charts.js";
import { $, api, el, fmtBytes, fmtDuration, fmtNumber, fmtTime, short, text } from "./view.js";

const SEARCH_PHASES = new Set(["searching", "calibrating", "exporting", "signing",
  "submitting", "done"]);
const RESULT_STAGES = new Set(["submitted", "disputed", "settled"]);
const FINAL = new Set(["done", "failed"]);
const CPU_WINDOW = 150;

class Member {
  constructor(address) {
    this.address = address;
    this.snapshot = {};
    this.steps = new Map();
    this.slot = null;
    this.ended = false;
    this.receivedAt = 0;
    this.version = 0;  // bumped by every update: the curves redraw only when it moves
  }

  apply(update) {
    this.version += 1;
    Object.assign(this.snapshot, update);
    this.receivedAt = Date.now();
    if (Array.isArray(update.subnets) && Number.isInteger(update.step)) {
      this.steps.set(update.step, {
        phase: update.train_phase ?? this.snapshot.train_phase ?? "",
        subnets: update.subnets, samplesPerS: update.samples_per_s ?? null,
        timeS: update.time_s ?? null,
      });
    }
    if (FINAL.has(update.phase)) this.ended = true;
  }
}

const params = new URLSearchParams(location.search);
const state = {
  taskId: /^[1-9][0-9]*$/.test(params.get("task") ?? "") ? Number(params.get("task")) : null,
  members: new Map(), self: null, selected: null, timeline: null, timelineAt: 0,
  manifest: null, manifestRoot: null, hosts: new Map(), cpu: { times: [], rows: new Map() },
  connection: "connecting", reconnects: 0, historyLoads: 0, loading: 0, sinceLoad: [],
  ended: false,
};
const charts = {};
window.__monitor = { points: 0, stage: "", pareto: 0, connection: "connecting", members: 0 };

function member(address) {
  const key = address ?? state.self ?? "this server";
  if (!state.members.has(key)) state.members.set(key, new Member(key));
  return state.members.get(key);
}

// ---- the live stream ---------------------------------------------------------------------

function onUpdate(update) {
  if (state.loading) {
    state.sinceLoad.push(update);
    if (state.sinceLoad.length > 5000) state.sinceLoad.shift();
    return;
  }
  member(update.member).apply(update);
  render();
}

async function loadHistory() {
  const generation = ++state.loading;
  try {
    const history = await api(`tasks/${state.taskId}/history`);
    if (generation !== state.loading) return;
    state.members.clear();
    for (const m of history.members) {
      state.self ??= m.address;
      const target = member(m.address);
      target.slot = m.slot;
      m.updates.forEach((u) => target.apply(u));
      if (m.snapshot) target.apply(m.snapshot);
    }
    state.historyLoads += 1;
  } catch (err) {
    console.warn("history not loaded", err);
  } finally {
    if (generation === state.loading) {
      state.loading = 0;
      const pending = state.sinceLoad.splice(0);
      pending.forEach((u) => member(u.member).apply(u));
      render();
    }
  }
}

function setConnection(value) {
  state.connection = value;
  render();
}

function connect() {
  const source = new EventSource(`tasks/${state.taskId}/events`);
  const data = (e) => JSON.parse(e.data);
  // What this stream said last about the task: an `end` is final only after a final phase
  // (or from a group stream, which ends only when every member's task has).
  let phase = null;
  let group = false;
  const onData = (e) => {
    const update = data(e);
    if (update.member !== undefined) group = true;
    else if (update.phase) phase = update.phase;
    onUpdate(update);
  };
  source.addEventListener("open", () => { setConnection("live"); loadHistory(); });
  source.addEventListener("snapshot", onData);
  source.addEventListener("progress", onData);
  source.addEventListener("resync", () => loadHistory());
  source.addEventListener("end", (e) => {
    const who = data(e).member;
    if (who !== undefined) {  // one member of the group is done
      if (state.members.has(who)) state.members.get(who).ended = true;
      return;
    }
    source.close();
    if (group || FINAL.has(phase)) {
      state.ended = true;
      setConnection("ended");
      loadHistory();
    } else {  // the server is stopping (a daemon restart): come back in a while
      state.reconnects += 1;
      setConnection("reconnecting");
      setTimeout(connect, 3000);
    }
  });
  source.addEventListener("error", () => {
    if (state.ended) return;
    state.reconnects += 1;
    setConnection("reconnecting");
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  });
}

// ---- polling: timeline, manifest, rig, task list -------------------------------------------

// Calls fn every intervalMs until done() says there is nothing more to learn.
function poll(fn, intervalMs, done = () => false) {
  const run = async () => {
    try { await fn(); } catch (err) { console.debug("poll failed", err); }
    if (!done()) setTimeout(run, intervalMs);
  };
  run();
}

const CLOSED_STATES = new Set(["SETTLED", "CANCELLED", "EXPIRED"]);

async function refreshTimeline() {
  state.timeline = await api(`tasks/${state.taskId}/timeline`);
  state.timelineAt = Date.now();
  render();
}

function searchStarted() {
  const stage = state.timeline?.current;
  return RESULT_STAGES.has(stage) || [...state.members.values()].some(
    (m) => SEARCH_PHASES.has(m.snapshot.phase));
}

async function refreshManifest() {
  if (state.manifest || !searchStarted()) return;
  const response = await fetch(`tasks/${state.taskId}/manifest`, { cache: "no-store" });
  if (!response.ok) return;
  state.manifestRoot = response.headers.get("X-Manta-Result-Root");
  state.manifest = await response.json();
  render();
}

async function refreshRig() {
  const { hosts } = await api("rig");
  const now = Date.now() / 1000;
  state.hosts = new Map(hosts.map((h) => [h.name, h]));
  const cpu = state.cpu;
  cpu.times.push(now);
  for (const h of hosts) if (!cpu.rows.has(h.name)) cpu.rows.set(h.name, cpu.times.map(() => null));
  for (const [name, row] of cpu.rows) row.push(state.hosts.get(name)?.cpu_percent ?? null);
  if (cpu.times.length > CPU_WINDOW) {
    cpu.times.shift();
    for (const row of cpu.rows.values()) row.shift();
  }
  render();
}

async function refreshTaskList() {
  const { tasks } = await api("tasks");
  const picker = $("#task-picker");
  const ids = new Set(tasks.map((t) => t.task_id));
  if (state.taskId) ids.add(state.taskId);
  const options = [...ids].sort((a, b) => b - a).map((id) => {
    const task = tasks.find((t) => t.task_id === id);
    return el("option", { value: id, selected: id === state.taskId },
      `#${id}${task ? ` · ${task.phase}` : ""}`);
  });
  if (!state.taskId) options.unshift(el("option", { value: "", selected: true }, "choose…"));
  picker.replaceChildren(...options);
  if (!state.taskId) renderTaskList(tasks);
}

// ---- rendering ---------------------------------------------------------------------------

let frame = 0;
function render() {
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
}

let lastCurvesKey = "";

function draw() {
  if (!state.taskId) return;
  const main = selectedMember();
  renderConnection();
  renderTimeline();
  renderStats(main);
  const versions = [...state.members.values()].map((x) => x.version).join(",");
  const curvesKey = `${main?.address}:${versions}`;  // the picker lists every reporting member
  if (curvesKey !== lastCurvesKey) {
    lastCurvesKey = curvesKey;
    renderCurves(main);
  }
  renderGroup();
  renderRig();
  renderSearch();
  const stage = state.timeline?.current ?? "";
  Object.assign(window.__monitor, {
    points: main ? main.steps.size : 0, stage, pareto: state.manifest?.pareto_front?.length ?? 0,
    connection: state.connection, members: state.members.size, reconnects: state.reconnects,
    historyLoads: state.historyLoads, phase: main?.snapshot.phase ?? null,
    lastStep: main ? Math.max(0, ...main.steps.keys()) : 0,
  });
  Object.assign(document.body.dataset, {
    connection: state.connection, points: String(window.__monitor.points), stage,
    pareto: String(window.__monitor.pareto),
  });
}

function selectedMember() {
  const withSteps = [...state.members.values()].filter((m) => m.steps.size > 0);
  if (state.selected && state.members.has(state.selected)) return state.members.get(state.selected);
  const leader = withSteps.find((m) => m.slot === 0);
  return leader ?? withSteps[0] ?? state.members.values().next().value ?? null;
}

function renderConnection() {
  const labels = { live: "live", connecting: "connecting…", ended: "stream ended",
    reconnecting: `reconnecting… (${state.reconnects})` };
  text("#connection-text", labels[state.connection] ?? state.connection);
}

function renderTimeline() {
  const t = state.timeline;
  if (!t) return;
  const now = t.chain_time_s + (Date.now() - state.timelineAt) / 1000;
  text("#chain-state", `${t.state} · ${t.claimed}/${t.slots} slots · reward ${fmtNumber(t.reward_wei / 1e18, 4)}`);
  $("#timeline").replaceChildren(...t.stages.map((s) => {
    const classes = [s.done ? "done" : "", s.key === t.current ? "current" : "",
      s.failed ? "failed" : ""].join(" ");
    const due = !s.done && s.deadline_s ? s.deadline_s - now : null;
    return el("li", { class: classes, "data-stage": s.key },
      el("span", { class: "label" }, s.label),
      el("span", { class: "when" }, s.time_s ? fmtTime(s.time_s) : (s.done ? "done" : "pending")),
      due === null ? "" : el("span", { class: `due ${due < 0 ? "late" : ""}` },
        due < 0 ? `deadline passed ${fmtDuration(-due)} ago` : `due in ${fmtDuration(due)}`));
  }));
  $("#event-log tbody").replaceChildren(...t.events.map((e) => el("tr", {},
    el("td", {}, `#${e.block_number}`), el("td", {}, e.time_s ? fmtTime(e.time_s) : ""),
    el("td", {}, e.name), el("td", {}, Object.entries(e.detail)
      .map(([k, v]) => `${k}=${typeof v === "string" && v.startsWith("0x") ? short(v) : v}`)
      .join(" ")))));
}

function renderStats(m) {
  const s = m?.snapshot ?? {};
  const progress = s.total_steps ? Math.min(1, (s.step ?? 0) / s.total_steps) : 0;
  const stat = (k, v, extra) => el("div", { class: "stat" }, el("div", { class: "k" }, k),
    el("div", { class: "v", title: String(v) }, v), extra ?? "");
  $("#stats").replaceChildren(
    stat("phase", s.phase ?? "—"),
    stat("shrinking phase", s.train_phase ?? "—"),
    stat("step", s.total_steps ? `${s.step ?? 0} / ${s.total_steps}` : "—",
      el("div", { class: "bar" }, el("span", { style: `width:${(100 * progress).toFixed(1)}%` }))),
    stat("throughput", s.samples_per_s != null ? `${fmtNumber(s.samples_per_s, 0)} /s` : "—"),
    stat("ETA", eta(m)),
    stat("exchange rounds", s.exchange_rounds ?? "—"),
    stat("gradients sent", s.grad_bytes_sent != null ? fmtBytes(s.grad_bytes_sent) : "—"),
    stat("val accuracy", s.val_accuracy != null ? `${fmtNumber(100 * s.val_accuracy, 1)} %` : "—"),
  );
}

function eta(m) {
  const s = m?.snapshot;
  if (!s || !s.total_steps || s.phase !== "training") return s?.phase && s.phase !== "training" ? "—" : "…";
  if (s.step >= s.total_steps) return "done";
  if (typeof s.eta_s === "number") return fmtDuration(Math.max(0, s.eta_s - (Date.now() - m.receivedAt) / 1000));
  const timed = [...m.steps.entries()].filter(([, p]) => p.timeS).sort((a, b) => a[0] - b[0]).slice(-30);
  if (timed.length < 2) return "…";
  const [[s0, p0], [s1, p1]] = [timed[0], timed[timed.length - 1]];
  const rate = (s1 - s0) / Math.max(p1.timeS - p0.timeS, 1e-6);
  return rate > 0 ? fmtDuration((s.total_steps - s.step) / rate) : "…";
}

function curves(m) {
  const steps = [...m.steps.keys()].sort((a, b) => a - b);
  const names = [];
  let metric = "accuracy";
  for (const step of steps) {
    for (const n of m.steps.get(step).subnets) {
      if (!names.includes(n.name)) names.push(n.name);
      if (n.epe !== undefined) metric = "epe";
    }
  }
  const rows = (key) => names.map((name) => steps.map((step) => {
    const v = m.steps.get(step).subnets.find((n) => n.name === name)?.[key];
    return typeof v === "number" ? v : null;
  }));
  const segments = [];
  for (const step of steps) {
    const phase = m.steps.get(step).phase;
    const last = segments[segments.length - 1];
    if (last && last.name === phase) last.to = step;
    else segments.push({ name: phase, from: step, to: step });
  }
  const throughput = [steps.map((step) => m.steps.get(step).samplesPerS)];
  return { steps, names, metric, loss: rows("loss"), score: rows(metric), throughput, segments };
}

function renderCurves(m) {
  const reporting = [...state.members.values()].filter((x) => x.steps.size > 0);
  const picker = $("#member-picker");
  picker.hidden = reporting.length < 2;
  if (!picker.hidden && picker.options.length !== reporting.length) {
    picker.replaceChildren(...reporting.map((x) => el("option", { value: x.address },
      `slot ${x.slot ?? "?"} · ${short(x.address)}`)));
  }
  if (m) picker.value = m.address;
  text("#curves-source", m && m.steps.size ? `from ${short(m.address)}` : "");
  $("#training-empty").hidden = Boolean(m && m.steps.size);
  if (!m || !m.steps.size) return;
  const c = curves(m);
  charts.loss ??= new StepChart($("#chart-loss"), { yLabel: "loss" });
  charts.metric ??= new StepChart($("#chart-metric"), { yLabel: c.metric });
  charts.throughput ??= new StepChart($("#chart-throughput"), { yLabel: "samples/s" });
  text("#metric-caption", `${c.metric === "epe" ? "EPE" : "Accuracy"} per sampled sub-network`);
  charts.loss.update(c.steps, c.names, c.loss, c.segments);
  charts.metric.update(c.steps, c.names, c.score, c.segments);
  charts.throughput.update(c.steps, ["samples/s"], c.throughput, c.segments);
}

function renderGroup() {
  const rows = new Map();
  for (const x of state.timeline?.members ?? []) rows.set(x.address.toLowerCase(), { slot: x.slot, address: x.address });
  for (const x of state.members.values()) {
    const key = x.address.toLowerCase();
    rows.set(key, { ...(rows.get(key) ?? { slot: x.slot, address: x.address }), reporter: x });
  }
  const reporters = [...state.members.values()];
  const lastRound = (address) => {
    const seen = reporters.filter((r) => Array.isArray(r.snapshot.peers) && r.snapshot.exchange_rounds);
    if (!seen.length) return "—";
    const ok = seen.every((r) => r.snapshot.peers.some((p) => p.toLowerCase() === address.toLowerCase()));
    return el("span", { class: ok ? "ok" : "bad" }, ok ? "✓ contributed" : "✗ missing");
  };
  const dropped = (address) => {
    const counts = reporters.map((r) => Object.entries(r.snapshot.dropped_rounds ?? {})
      .find(([k]) => k.toLowerCase() === address.toLowerCase())?.[1]).filter((v) => v !== undefined);
    return counts.length ? String(Math.max(...counts)) : "—";
  };
  const sorted = [...rows.values()].sort((a, b) => (a.slot ?? 99) - (b.slot ?? 99));
  $("#group tbody").replaceChildren(...sorted.map((row) => {
    const s = row.reporter?.snapshot ?? {};
    const status = row.reporter ? `${s.phase ?? "waiting"}${s.step != null && s.phase === "training" ? ` · step ${s.step}` : ""}`
      : "no stream here";
    return el("tr", {},
      el("td", {}, row.slot === 0 ? "0 (leader)" : String(row.slot ?? "?")),
      el("td", { title: row.address }, el("code", {}, short(row.address))),
      el("td", {}, status), el("td", {}, lastRound(row.address)),
      el("td", {}, dropped(row.address)),
      el("td", {}, s.grad_bytes_sent != null ? fmtBytes(s.grad_bytes_sent) : "—"),
      el("td", {}, s.samples_per_s != null ? fmtNumber(s.samples_per_s, 0) : "—"));
  }));
}

function meter(label, fraction, detail) {
  const pct = fraction == null ? 0 : Math.round(100 * fraction);
  return el("div", { class: "meter" }, el("span", {}, label),
    el("div", { class: "bar" }, el("span", { style: `width:${pct}%` })), el("span", {}, detail));
}

function renderRig() {
  const hosts = [...state.hosts.values()];
  $("#rig").replaceChildren(...hosts.map((h) => {
    const used = h.memory_total_bytes != null && h.memory_available_bytes != null
      ? h.memory_total_bytes - h.memory_available_bytes : null;
    const gpus = (h.gpus ?? []).flatMap((g) => [
      meter(`GPU ${g.index}`, g.utilization_percent != null ? g.utilization_percent / 100 : null,
        g.utilization_percent != null ? `${g.utilization_percent} % ${g.name}` : g.name),
      meter("GPU mem", g.memory_total_bytes ? g.memory_used_bytes / g.memory_total_bytes : null,
        g.memory_total_bytes ? `${fmtBytes(g.memory_used_bytes)} / ${fmtBytes(g.memory_total_bytes)}` : "—")]);
    return el("div", { class: "host" },
      el("div", {}, el("b", {}, short(h.name)), el("span", { class: "muted" },
        ` · ${h.cpus ?? "?"} CPUs · load ${(h.load_avg ?? []).map((x) => x.toFixed(2)).join(" ") || "—"}`
        + (h.error ? ` · ${h.error}` : ""))),
      meter("CPU", h.cpu_percent != null ? h.cpu_percent / 100 : null,
        h.cpu_percent != null ? `${h.cpu_percent.toFixed(0)} %` : "—"),
      meter("memory", used != null ? used / h.memory_total_bytes : null,
        used != null ? `${fmtBytes(used)} / ${fmtBytes(h.memory_total_bytes)}` : "—"),
      ...(gpus.length ? gpus : [el("div", { class: "muted" }, "no GPU reported")]));
  }));
  if (state.cpu.times.length > 1) {
    charts.cpu ??= new CpuChart($("#chart-cpu"));
    const names = [...state.cpu.rows.keys()];
    charts.cpu.update(state.cpu.times, names.map(short), names.map((n) => state.cpu.rows.get(n)));
  }
}

function renderSearch() {
  const leader = [...state.members.values()].find((m) => SEARCH_PHASES.has(m.snapshot.phase)
    && m.snapshot.subnets_total);
  const manifest = state.manifest;
  if (!manifest) {
    const s = leader?.snapshot;
    text("#search-status", s ? `${s.phase}: measured ${s.subnets_measured ?? 0} of ${s.subnets_total} sub-networks`
      : (searchStarted() ? "Searching…" : "The search starts after training."));
    return;
  }
  const score = manifest.metrics.accuracy != null ? "accuracy" : "score";
  // The chosen network where the search scored it (on the front), else where it measured.
  const onFront = manifest.pareto_front.find((p) => sameArch(p.arch, manifest.arch));
  const chosen = onFront ?? { flops: manifest.metrics.flops, score: manifest.metrics.accuracy };
  text("#search-status", `${manifest.pareto_front.length} networks on the Pareto front; the chosen one in red.`);
  const figure = $("#pareto-figure");
  if (figure.hidden) {
    figure.hidden = false;
    charts.pareto = new ParetoChart($("#chart-pareto"), { yLabel: score });
    charts.pareto.update(manifest.pareto_front, chosen, manifest.largest ?? null);
    renderManifest(manifest);
  }
}

function sameArch(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function renderManifest(m) {
  const arch = m.arch ?? {};
  const rows = [
    ["task", `#${m.task_id}`],
    ["result root", state.manifestRoot ? short(state.manifestRoot, 10) : "—"],
    ["val accuracy", m.metrics.accuracy != null ? `${fmtNumber(100 * m.metrics.accuracy, 2)} %` : "—"],
    ...(m.metrics.epe != null ? [["EPE", fmtNumber(m.metrics.epe, 3)]] : []),
    ["FLOPs", `${fmtNumber(m.metrics.flops / 1e6, 2)} M`],
    ["params", fmtNumber(m.metrics.params, 0)],
    ...(m.metrics.latency_ms != null ? [["latency", `${fmtNumber(m.metrics.latency_ms, 2)} ms`]] : []),
    ["resolution", String(arch.resolution ?? "—")],
    ["depths", JSON.stringify(arch.depth ?? [])],
    ["kernels", JSON.stringify(arch.kernel ?? [])],
    ["expand", JSON.stringify(arch.expand ?? [])],
    ["weights", short(m.weights_sha256, 10)],
    ...(m.largest ? [["largest net", `${fmtNumber(100 * m.largest.score, 2)} % at ${fmtNumber(m.largest.flops / 1e6, 2)} MFLOPs`]] : []),
    ...m.group.map((a, i) => [`share slot ${i}`, `${short(a)} ≈ ${fmtNumber(m.shares_wei[i] / 1e18, 4)}`]),
  ];
  const dl = $("#manifest");
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  dl.hidden = false;
}

function renderTaskList(tasks) {
  $("#task-list tbody").replaceChildren(...tasks.map((t) => el("tr", {},
    el("td", {}, el("a", { href: `?task=${t.task_id}` }, `#${t.task_id}`)),
    el("td", {}, t.phase ?? ""), el("td", {}, t.role ?? ""),
    el("td", {}, t.updated_at ? fmtTime(t.updated_at) : ""))));
  $("#task-list-empty").hidden = tasks.length > 0;
}

// ---- start -------------------------------------------------------------------------------

function start() {
  $("#task-picker").addEventListener("change", (e) => {
    if (e.target.value) location.search = `?task=${e.target.value}`;
  });
  $("#member-picker").addEventListener("change", (e) => { state.selected = e.target.value; render(); });
  addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  poll(refreshTaskList, 5000);
  if (!state.taskId) {
    $("#tasks-view").hidden = false;
    setConnection("ended");
    return;
  }
  $("#task-view").hidden = false;
  document.title = `MANTA task #${state.taskId}`;
  connect();
  poll(refreshTimeline, 2000, () => CLOSED_STATES.has(state.timeline?.state));
  poll(refreshRig, 2000, () => state.ended);
  poll(refreshManifest, 2000, () => state.manifest !== null);
  setInterval(() => { renderTimeline(); renderStats(selectedMember()); }, 1000);  // countdowns
}

start();
