// The pages: jobs, job, run, flows, webhooks. Each renders into `main` from documented
// API routes and returns a cleanup function (live streams stop when the page is left).

import { call, follow, ApiError } from "./api.js";
import { esc } from "./ansi.js";
import { LogView } from "./logview.js";

const q = (sel, root = document) => root.querySelector(sel);

export function badge(status) {
  return `<span class="badge st-${esc(status || "unknown")}">${esc(status || "?")}</span>`;
}

function when(t) {
  return t ? esc(t.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC")) : "–";
}

export function duration(from, to) {
  if (!from) return "–";
  const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from);
  if (!(ms >= 0)) return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function showError(main, e) {
  main.innerHTML = `<div class="error">${esc(e instanceof ApiError ? `${e.status}: ${e.message}` : e.message)}</div>`;
}

function link(params, text, cls = "") {
  const u = new URLSearchParams(params).toString();
  return `<a data-nav class="${cls}" href="/${u ? "?" + u : ""}">${text}</a>`;
}

// ---------- jobs ----------

export async function jobsPage(main, params) {
  const f = (k) => esc(params.get(k) || "");
  main.innerHTML = `
    <h1>Jobs</h1>
    <form class="filters" id="job-filters">
      <input name="flow" placeholder="flow" value="${f("flow")}">
      <input name="run" placeholder="run" value="${f("run")}">
      <select name="status">
        ${["", "running", "success", "failure"].map((s) => `<option value="${s}" ${params.get("status") === s ? "selected" : ""}>${s || "any status"}</option>`).join("")}
      </select>
      <input name="label" placeholder="label key=value" value="${f("label")}">
      <button>Filter</button>
    </form>
    <div id="jobs-body">Loading…</div>`;
  q("#job-filters", main).addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) p.set(k, v);
    window.navigate(`/?${p}`);
  });
  const api = new URLSearchParams();
  for (const k of ["flow", "run", "status", "label", "cursor"]) if (params.get(k)) api.set(k, params.get(k));
  api.set("limit", "50");
  let page;
  try {
    page = await call(`/api/v1/jobs?${api}`);
  } catch (e) {
    return showError(q("#jobs-body", main), e);
  }
  const rows = page.jobs.map((j) => `
    <tr>
      <td>${link({ job: j.id }, esc(j.name || j.container_id.slice(0, 12)))}</td>
      <td>${badge(j.status)}</td>
      <td>${esc(j.reason || "")}</td>
      <td>${esc(j.image)}</td>
      <td>${j.flow ? link({ flow: j.flow }, esc(j.flow)) : ""}</td>
      <td>${j.run ? link({ run: j.run }, esc(j.run)) : ""}</td>
      <td>${when(j.created_at)}</td>
      <td>${duration(j.started_at, j.finished_at)}</td>
    </tr>`).join("");
  const older = new URLSearchParams(params);
  if (page.next_cursor) older.set("cursor", page.next_cursor);
  const first = new URLSearchParams(params);
  first.delete("cursor");
  q("#jobs-body", main).innerHTML = page.jobs.length ? `
    <table class="list" id="jobs-table">
      <thead><tr><th>job</th><th>status</th><th>reason</th><th>image</th><th>flow</th><th>run</th><th>created</th><th>duration</th></tr></thead>
      <tbody>${rows}</tbody>
    </table>
    <div class="pager">
      ${params.get("cursor") ? `<a data-nav href="/?${first}">« newest</a>` : ""}
      ${page.next_cursor ? `<a data-nav href="/?${older}" id="older">older »</a>` : ""}
    </div>` : `<p class="empty">No jobs match.</p>`;
}

// ---------- job ----------

function jobHeader(j) {
  const outputs = Object.entries(j.outputs || {});
  return `
    <h1>${esc(j.name || j.container_id.slice(0, 12))} ${badge(j.status)}</h1>
    <dl class="meta">
      <dt>verdict</dt><dd id="verdict">${j.status === "running" ? "running" : `${esc(j.status)}: ${esc(j.reason || "")}`}</dd>
      <dt>exit code</dt><dd id="exit-code">${j.exit_code ?? "–"}</dd>
      <dt>image</dt><dd>${esc(j.image)}</dd>
      <dt>node</dt><dd>${esc(j.node)}</dd>
      <dt>container</dt><dd class="mono">${esc(j.container_id)}</dd>
      ${j.flow ? `<dt>flow</dt><dd>${esc(j.flow)}${j.run ? ` · run ${link({ run: j.run }, esc(j.run))}` : ""}${j.stage ? ` · ${esc(j.stage)} / ${esc(j.action || "")} / ${esc(j.job || "")}` : ""}</dd>` : ""}
      <dt>started</dt><dd>${when(j.started_at)}</dd>
      <dt>finished</dt><dd>${when(j.finished_at)} (${duration(j.started_at, j.finished_at)})</dd>
      ${j.logs_unavailable ? `<dt>logs</dt><dd class="warn">${esc(j.logs_unavailable)}</dd>` : ""}
    </dl>
    ${outputs.length ? `<table class="outputs"><thead><tr><th>output</th><th>value</th></tr></thead><tbody>${outputs.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join("")}</tbody></table>` : ""}`;
}

export async function jobPage(main, params) {
  const id = params.get("job");
  let job;
  try {
    job = await call(`/api/v1/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    return showError(main, e);
  }
  document.title = `${job.name || job.id} · Logarithm`;
  main.innerHTML = `
    <div id="job-header">${jobHeader(job)}</div>
    <div class="toolbar">
      <select id="stream"><option value="">stdout + stderr</option><option value="stdout">stdout</option><option value="stderr">stderr</option></select>
      <label><input type="checkbox" id="timestamps"> timestamps</label>
      <span class="search">
        <input id="search" placeholder="search" size="24">
        <label><input type="checkbox" id="regex"> regex</label>
        <button id="prev" title="previous match">↑</button>
        <button id="next" title="next match">↓</button>
        <span id="match-count"></span>
      </span>
      <a id="raw" href="/api/v1/jobs/${job.id}/logs?format=text" download="${esc(job.name || job.id)}.log">raw</a>
      <button id="to-end">end ⇣</button>
      <label id="follow-wrap" ${job.status === "running" ? "" : "hidden"}><input type="checkbox" id="follow" checked> follow</label>
      <span id="log-state" class="state"></span>
    </div>
    <div id="log"></div>`;
  const view = new LogView(q("#log", main), job, {
    onEnd: (j) => {
      q("#job-header", main).innerHTML = jobHeader(j);
      q("#follow-wrap", main).hidden = true;
      q("#log-state", main).textContent = "finished";
    },
    onLive: (s, why) => {
      if (s === "ended") return; // onEnd says "finished"
      q("#log-state", main).textContent = s === "failed" ? `live follow failed: ${why}` : s;
    },
  });
  window.logView = view; // for tests and the console
  const ts = localStorage.getItem("logarithm.timestamps") === "1";
  q("#timestamps", main).checked = ts;
  view.setTimestamps(ts);
  q("#timestamps", main).addEventListener("change", (e) => {
    localStorage.setItem("logarithm.timestamps", e.target.checked ? "1" : "0");
    view.setTimestamps(e.target.checked);
  });
  q("#stream", main).addEventListener("change", (e) => view.setStream(e.target.value));
  const count = q("#match-count", main);
  const runSearch = async () => {
    count.textContent = "searching…";
    try {
      const n = await view.search(q("#search", main).value, q("#regex", main).checked, (k, more) => {
        count.textContent = `${k}${more ? "+" : ""} matches`;
      });
      if (n) {
        const [i, t] = view.step(1);
        count.textContent = `${i} / ${t}`;
      } else {
        count.textContent = q("#search", main).value ? "no matches" : "";
      }
    } catch (e) {
      count.textContent = e.message;
    }
  };
  q("#search", main).addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (view.matches.length && e.target.value === view.lastQuery) {
        const [i, t] = view.step(e.shiftKey ? -1 : 1);
        count.textContent = `${i} / ${t}`;
      } else {
        view.lastQuery = e.target.value;
        runSearch();
      }
    }
  });
  for (const [sel, dir] of [["#next", 1], ["#prev", -1]]) {
    q(sel, main).addEventListener("click", () => {
      if (q("#search", main).value !== view.lastQuery) {
        view.lastQuery = q("#search", main).value;
        return runSearch();
      }
      const [i, t] = view.step(dir);
      count.textContent = t ? `${i} / ${t}` : "no matches";
    });
  }
  q("#to-end", main).addEventListener("click", () => view.scrollToEnd());
  q("#raw", main).addEventListener("click", async (e) => {
    const t = sessionStorage.getItem("logarithm.read_token") || sessionStorage.getItem("logarithm.admin_token");
    if (!t) return; // a plain link works when reads are open
    e.preventDefault();
    const r = await fetch(e.target.href, { headers: { Authorization: `Bearer ${t}` } });
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `${job.name || job.id}.log`;
    a.click();
    URL.revokeObjectURL(url);
  });
  q("#follow", main).addEventListener("change", (e) => view.setFollowing(e.target.checked));
  if (location.hash) view.applyHash(location.hash);
  if (job.status === "running") {
    view.startFollow();
    if (!location.hash) view.scrollToEnd();
  }
  return () => view.stop();
}

// ---------- run ----------

function runTree(r) {
  const waiting = r.stages.some((s) => s.type === "pause" && s.status === "running");
  const active = r.status === "pending" || r.status === "running";
  const stages = r.stages.map((s) => `
    <div class="stage st-${esc(s.status)}" data-stage="${esc(s.name)}">
      <div class="stage-head">${esc(s.name)} <span class="kind">${esc(s.type)}</span> ${badge(s.status)}</div>
      <div class="stage-meta">${duration(s.started_at, s.finished_at)}${s.reason ? ` · ${esc(s.reason)}` : ""}</div>
      ${s.actions.map((a) => `
        <div class="action st-${esc(a.status)}">
          <div class="action-head">${esc(a.name)} ${badge(a.status)} <span class="dur">${duration(a.started_at, a.finished_at)}</span></div>
          ${a.reason ? `<div class="reason">${esc(a.reason)}</div>` : ""}
          <ul class="jobs">${a.jobs.map((j) => `
            <li class="st-${esc(j.status)}">${j.job_id ? link({ job: j.job_id }, esc(j.name)) : esc(j.name)} ${badge(j.status)}
              <span class="dur">${duration(j.started_at, j.finished_at)}</span>
              ${j.reason ? `<span class="reason">${esc(j.reason)}</span>` : ""}</li>`).join("")}</ul>
        </div>`).join("")}
    </div>`).join('<div class="arrow">→</div>');
  return `
    <h1>Run ${esc(r.id)} ${badge(r.status)}</h1>
    <dl class="meta">
      <dt>flow</dt><dd>${esc(r.flow)}</dd>
      <dt>reason</dt><dd id="run-reason">${esc(r.reason || "–")}</dd>
      <dt>started</dt><dd>${when(r.started_at)}</dd>
      <dt>duration</dt><dd>${duration(r.started_at, r.finished_at)}</dd>
      <dt>jobs</dt><dd>${link({ run: r.id, view: "jobs" }, "list")}</dd>
    </dl>
    <div class="actions">
      ${waiting ? `<button id="approve">Approve</button><button id="reject">Reject</button>` : ""}
      ${active ? `<button id="cancel">Cancel</button>` : ""}
      <span id="run-state" class="state"></span>
    </div>
    <div class="stages">${stages}</div>`;
}

export async function runPage(main, params) {
  const id = params.get("run");
  if (params.get("view") === "jobs") return jobsPage(main, params);
  let run;
  try {
    run = await call(`/api/v1/runs/${encodeURIComponent(id)}`);
  } catch (e) {
    return showError(main, e);
  }
  let live = null;
  let state = "";
  const draw = (r) => {
    run = r;
    main.innerHTML = runTree(r);
    q("#run-state", main).textContent = state;
    for (const act of ["approve", "reject", "cancel"]) {
      const b = q(`#${act}`, main);
      if (!b) continue;
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          const body = act === "approve" ? { by: "web UI" } : { reason: `${act}ed in the web UI` };
          draw(await call(`/api/v1/runs/${encodeURIComponent(id)}/${act}`, { method: "POST", body, admin: true }));
        } catch (e) {
          q("#run-state", main).textContent = e.message;
          b.disabled = false;
        }
      });
    }
  };
  draw(run);
  if (run.status === "pending" || run.status === "running") {
    live = follow(`/api/v1/runs/${encodeURIComponent(id)}/stream`, {
      on: (ev, data) => draw(data),
      state: (s) => { state = s === "live" ? "live" : s; const el = q("#run-state", main); if (el) el.textContent = state; },
    });
  }
  return () => live && live.stop();
}

// ---------- flows ----------

export async function flowsPage(main) {
  main.innerHTML = `<h1>Flows</h1><div id="flows-body">Loading…</div>`;
  let flows;
  try {
    flows = (await call("/api/v1/flows")).flows;
  } catch (e) {
    return showError(q("#flows-body", main), e);
  }
  let runs = [];
  try {
    runs = (await call("/api/v1/runs?limit=20")).runs;
  } catch (_) { /* shown as none */ }
  q("#flows-body", main).innerHTML = `
    <table class="list"><thead><tr><th>flow</th><th>title</th><th>stages</th><th>updated</th><th></th></tr></thead><tbody>
    ${flows.map((f) => `<tr><td>${esc(f.name)}</td><td>${esc(f.title || "")}</td><td>${f.stages.map((s) => esc(s.name)).join(" → ")}</td><td>${when(f.updated_at)}</td>
      <td><button class="start" data-flow="${esc(f.name)}">start run</button></td></tr>`).join("")}
    </tbody></table>
    <h2>Recent runs</h2>
    <table class="list"><thead><tr><th>run</th><th>flow</th><th>status</th><th>reason</th><th>started</th><th>duration</th></tr></thead><tbody>
    ${runs.map((r) => `<tr><td>${link({ run: r.id }, esc(r.id))}</td><td>${esc(r.flow)}</td><td>${badge(r.status)}</td><td>${esc(r.reason || "")}</td><td>${when(r.started_at)}</td><td>${duration(r.started_at, r.finished_at)}</td></tr>`).join("")}
    </tbody></table>`;
  for (const b of main.querySelectorAll("button.start")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        const r = await call(`/api/v1/flows/${encodeURIComponent(b.dataset.flow)}/runs`, { method: "POST", body: {}, admin: true });
        window.navigate(`/?run=${encodeURIComponent(r.id)}`);
      } catch (e) {
        b.disabled = false;
        b.textContent = e.message;
      }
    });
  }
}

// ---------- webhooks ----------

export async function webhooksPage(main, params) {
  main.innerHTML = `<h1>Webhooks</h1><div id="hooks-body">Loading…</div>`;
  let subs;
  try {
    subs = (await call("/api/v1/webhooks", { admin: true })).webhooks;
  } catch (e) {
    return showError(q("#hooks-body", main), e);
  }
  const selected = params.get("webhook");
  let deliveries = "";
  if (selected) {
    try {
      const d = (await call(`/api/v1/webhooks/${encodeURIComponent(selected)}/deliveries`, { admin: true })).deliveries;
      deliveries = `<h2>Deliveries of ${esc(selected)}</h2>
        <table class="list"><thead><tr><th>delivery</th><th>event</th><th>status</th><th>attempts</th><th>last</th><th>created</th><th></th></tr></thead><tbody>
        ${d.map((x) => `<tr><td class="mono">${esc(x.id)}</td><td>${esc(x.event)}</td><td>${badge(x.status)}</td><td>${x.attempt_count}</td>
          <td>${esc(x.last_status_code ?? "")} ${esc(x.last_error || "")}</td><td>${when(x.created_at)}</td>
          <td><button class="redeliver" data-id="${esc(x.id)}">redeliver</button></td></tr>`).join("")}
        </tbody></table>`;
    } catch (e) {
      deliveries = `<div class="error">${esc(e.message)}</div>`;
    }
  }
  q("#hooks-body", main).innerHTML = `
    <table class="list"><thead><tr><th>id</th><th>name</th><th>url</th><th>events</th><th>enabled</th><th></th></tr></thead><tbody>
    ${subs.map((s) => `<tr><td class="mono">${esc(s.id)}</td><td>${esc(s.name || "")}</td><td class="mono">${esc(s.url)}</td><td>${s.events.map(esc).join(", ")}</td>
      <td>${s.enabled ? "yes" : `no (${esc(s.disabled_reason || "")})`}</td><td>${link({ view: "webhooks", webhook: s.id }, "deliveries")}</td></tr>`).join("")}
    </tbody></table>${deliveries}`;
  for (const b of main.querySelectorAll("button.redeliver")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await call(`/api/v1/webhooks/${encodeURIComponent(selected)}/deliveries/${encodeURIComponent(b.dataset.id)}/redeliver`, { method: "POST", admin: true });
        b.textContent = "queued";
      } catch (e) {
        b.textContent = e.message;
      }
    });
  }
}
