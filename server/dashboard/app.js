// apfa operations dashboard: polls /api every few seconds and renders it. Plain browser JavaScript, no build.
// Values from the API are only ever written with textContent, so an error message cannot inject markup.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "apfa.token";

// A ?token= link (e.g. from `apfa token`) is moved into sessionStorage and out of the address bar and history.
{
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
}

const $ = (id) => document.getElementById(id);

/** Creates an element: el("td", { class: "num", title: "x" }, "text", child…). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  return node;
}

class AuthNeeded extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) {
    showLogin(data.message);
    throw new AuthNeeded(data.message);
  }
  if (!res.ok) throw Object.assign(new Error(data.message || `${res.status} ${res.statusText}`), { status: res.status, data });
  return data;
}

// ---------------------------------------------------------------------------------------------- formatting

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
const when = (iso) => el("span", { title: iso ? new Date(iso).toLocaleString() : undefined }, ago(iso));
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const short = (v, n = 12) => (v ? el("span", { class: "mono", title: v }, v.length > n ? `${v.slice(0, n)}…` : v) : "–");
const badge = (text, cls = text) => el("span", { class: `badge ${cls}` }, text);
const ms = (d) => (d === null || d === undefined ? "–" : d < 1000 ? `${d} ms` : `${(d / 1000).toFixed(1)} s`);
const errorCell = (msg) => (msg ? el("span", { class: "error", title: msg }, msg.split("\n")[0]) : el("span", { class: "muted" }, "–"));

function fill(tableId, rows, emptyText, columns) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
}

function notice(text, bad = false) {
  const n = $("notice");
  n.textContent = text;
  n.className = bad ? "bad" : "";
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (n.hidden = true), 8000);
}

// ---------------------------------------------------------------------------------------------- sections

function renderWorkers({ workers }) {
  $("workers-count").textContent = `${workers.filter((w) => w.online).length} online`;
  fill("workers", workers.map((w) => el("tr", { "data-id": w.id, "data-status": w.status },
    el("td", { class: "nowrap" }, el("span", { class: `dot ${w.status}` }), w.status),
    el("td", {}, el("span", { class: "mono" }, w.id), el("div", { class: "muted" }, `${w.hostname} · pid ${w.pid} · ${w.pipeline}`)),
    el("td", {}, Object.entries(w.queues).sort(([a], [b]) => a.localeCompare(b)).map(([q, c]) => el("span", { class: "chip" }, `${q} ×${c}`))),
    el("td", {}, when(w.last_heartbeat_at)),
    el("td", {}, w.running.length ? w.running.map((j) => el("span", { class: "chip mono", title: j.run_id ? `run ${j.run_id}` : undefined }, `${j.task} #${j.id}`)) : el("span", { class: "muted" }, "idle")),
  )), "No worker has reported in the last hour. Start one with apfa worker.", 5);
}

function renderQueues({ queues }) {
  fill("queues", queues.map((q) => el("tr", { "data-queue": q.queue },
    el("td", {}, el("strong", {}, q.queue)),
    el("td", { class: "num" }, q.concurrency ?? "–"),
    el("td", { class: "num", title: `${q.ready} ready, ${q.scheduled} scheduled later` }, num(q.depth)),
    el("td", { class: "num" }, num(q.running)),
    el("td", { class: "num" }, num(q.completed_1h)),
    el("td", { class: "num", title: `${q.failed_jobs} failed job(s) kept for retry, ${q.retried_1h} retried attempt(s)` }, q.failed_1h || q.failed_jobs ? el("span", { class: "error" }, num(q.failed_1h)) : "0"),
    el("td", { class: "num" }, q.rate_per_min.toFixed(1)),
  )), "No queues.", 7);
}

function renderRuns({ runs }) {
  fill("runs", runs.map((r) => {
    const pct = Math.round(r.progress * 100);
    const batches = r.batches_total === null ? "enumerating" : `${r.batches_done + r.batches_failed}/${r.batches_total} batches`;
    return el("tr", { "data-id": r.id, "data-status": r.status },
      el("td", {}, el("span", { class: "mono" }, r.id)),
      el("td", {}, badge(r.status)),
      el("td", { class: "muted" }, r.trigger),
      el("td", {}, el("div", { class: "progress" },
        el("div", { class: `bar ${r.status}`, role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, styled(el("span"), pct)),
        el("span", { class: "label" }, `${pct}% · ${batches}`))),
      el("td", { class: "num" }, num(r.docs_embedded)),
      el("td", { class: "num", title: r.base_version ? `carried over from ${r.base_version}` : "no base version: everything embedded" }, num(r.docs_reused)),
      el("td", { class: "num" }, num(r.docs_removed)),
      el("td", { class: "num" }, r.docs_per_s === null ? "–" : r.docs_per_s.toFixed(1)),
      el("td", {}, when(r.started_at ?? r.created_at)),
      el("td", {}, r.error ? errorCell(r.error) : short(r.index_version, 16)),
    );
  }), "No runs yet. Press “Rebuild index” to start one.", 10);
}

function styled(node, pct) {
  node.style.width = `${pct}%`;
  return node;
}

function renderVersions({ current, versions }) {
  fill("versions", versions.map((v) => el("tr", { "data-id": v.version, class: v.current ? "current" : v.deleted_at ? "deleted" : undefined },
    el("td", {}, v.current ? badge("current") : v.deleted_at ? badge("deleted", "") : ""),
    el("td", {}, short(v.version, 20)),
    el("td", { class: "num" }, num(v.count)),
    el("td", { class: "num" }, v.dims),
    el("td", {}, v.engine),
    el("td", { title: recallTitle(v.recall) }, recallText(v.recall, v.engine)),
    el("td", { class: "muted" }, v.model_id),
    el("td", {}, when(v.created_at)),
    el("td", {}, when(v.published_at)),
    el("td", {}, !v.current && !v.deleted_at ? el("button", { class: "small", title: "Re-publish this version; servers hot-swap to it", onclick: () => rollback(v.version) }, "Roll back") : ""),
  )), current ? `indexes/latest names ${current}, which is not recorded in apfa.index_versions.` : "No index built yet.", 10);
}

/** The build's recall check in a cell: the same words as `apfa index list`. */
function recallText(r, engine) {
  if (!r) return engine === "flat" ? "exact" : "unmeasured";
  if (r.fallback) return `exact (${r.engine} ${r.measured.toFixed(2)} < ${r.target})`;
  const params = Object.entries(r.params).map(([k, v]) => `${k === "expansion_search" ? "ef" : k} ${v}`).join(" ");
  return `${r.measured.toFixed(3)} ${r.met ? "≥" : "<"} ${r.target}${params ? ` (${params})` : ""}`;
}

function recallTitle(r) {
  if (!r) return "";
  const rows = String(r.method).startsWith("held-out") ? "held-out corpus rows" : "corpus rows";
  const on = r.queries
    ? `${r.corpus.sample} ${rows} (${r.corpus.measured.toFixed(3)}) and ${r.queries.sample} logged queries (${r.queries.measured.toFixed(3)}), the lower counting`
    : `${r.sample} ${rows} (${r.method})`;
  return `recall@${r.k} against exact search on ${on}; tried ${r.tried.map((t) => `${Object.values(t.params).join("/")}: ${t.recall.toFixed(3)}`).join(", ")}`;
}

function renderFailed({ jobs }) {
  $("failed-count").textContent = jobs.length ? String(jobs.length) : "";
  fill("failed", jobs.map((j) => el("tr", { "data-id": j.id },
    el("td", { class: "mono" }, `#${j.id}`),
    el("td", {}, j.task),
    el("td", { class: "muted" }, j.queue ?? "–"),
    el("td", {}, badge(j.state)),
    el("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
    el("td", {}, errorCell(j.error)),
    el("td", {}, when(j.updated_at)),
    el("td", {}, el("button", { class: "small retry", title: "Run again now with a fresh set of attempts", onclick: (e) => retry(j.id, e.currentTarget) }, "Retry")),
  )), "No failed jobs.", 8);
}

function renderRecent({ jobs }) {
  fill("recent", jobs.map((h) => el("tr", { "data-id": h.id },
    el("td", {}, when(h.finished_at)),
    el("td", { class: "mono" }, h.job_id ? `#${h.job_id}` : "–"),
    el("td", {}, h.task),
    el("td", { class: "muted" }, h.queue ?? "–"),
    el("td", {}, badge(h.outcome)),
    el("td", { class: "num" }, `${h.attempt}/${h.max_attempts}`),
    el("td", { class: "num" }, ms(h.duration_ms)),
    el("td", {}, short(h.run_id, 22)),
    el("td", {}, errorCell(h.error)),
  )), "No jobs have finished in a while.", 9);
}

// ---------------------------------------------------------------------------------------------- actions

async function rebuild(force = false) {
  const button = $("rebuild");
  button.disabled = true;
  try {
    const r = await api("/api/runs", { method: "POST", body: force ? { force: true } : {} });
    notice(`Run ${r.run} started.`);
  } catch (err) {
    if (err instanceof AuthNeeded) return;
    if (err.data?.error === "run_active") {
      if (confirm(`${err.message.split(";")[0]}. Start another run anyway?`)) return rebuild(true);
      notice(`${err.message.split(";")[0]}.`, true);
    } else {
      notice(`Could not start a run: ${err.message}`, true);
    }
  } finally {
    button.disabled = false;
  }
  refresh();
}

async function retry(id, button) {
  button.disabled = true;
  try {
    await api(`/api/jobs/${encodeURIComponent(id)}/retry`, { method: "POST", body: {} });
    notice(`Job #${id} is queued again.`);
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notice(`Could not retry job #${id}: ${err.message}`, true);
  }
  refresh();
}

async function rollback(version) {
  if (!confirm(`Roll back to index version ${version.slice(0, 16)}…? Every server swaps to it.`)) return;
  try {
    const r = await api("/api/index/rollback", { method: "POST", body: { version } });
    notice(`Rolled back to ${r.version.slice(0, 16)}… (was ${r.previous ? `${r.previous.slice(0, 16)}…` : "none"}).`);
  } catch (err) {
    if (!(err instanceof AuthNeeded)) notice(`Rollback refused: ${err.message}`, true);
  }
  refresh();
}

// ---------------------------------------------------------------------------------------------- loop

function showLogin(reason) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("login-reason").textContent = reason ? `The server refused the request (${reason}).` : "";
}

let timer;
let inFlight = false;

async function refresh() {
  clearTimeout(timer);
  if (inFlight) return;
  inFlight = true;
  try {
    const [info, workers, queues, runs, versions, failed, recent] = await Promise.all([
      api("/api"), api("/api/workers"), api("/api/queues"), api("/api/runs?limit=10"), api("/api/index/versions"),
      api("/api/jobs?status=failed&limit=25"), api("/api/jobs?status=recent&limit=15"),
    ]);
    $("pipeline").textContent = `pipeline ${info.pipeline}${info.auth === "open" ? " · no token needed (localhost)" : ""}`;
    renderWorkers(workers);
    renderQueues(queues);
    renderRuns(runs);
    renderVersions(versions);
    renderFailed(failed);
    renderRecent(recent);
    $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (err instanceof AuthNeeded) return;
    $("refreshed").textContent = `refresh failed: ${err.message}`;
  } finally {
    inFlight = false;
  }
  if ($("auto").checked) timer = setTimeout(refresh, REFRESH_MS);
}

$("rebuild").addEventListener("click", () => rebuild());
$("auto").addEventListener("change", (e) => (e.target.checked ? refresh() : clearTimeout(timer)));
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("main").hidden = false;
  refresh();
});
document.addEventListener("visibilitychange", () => !document.hidden && $("auto").checked && refresh());
refresh();
