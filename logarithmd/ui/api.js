// Every call the page makes goes through here, to documented API routes only. Tokens:
// a read token (asked for once, on the first 401) and the admin token (asked for once,
// when an action needs it) live in sessionStorage: this browser tab's session only.

const KEYS = { read: "logarithm.read_token", admin: "logarithm.admin_token" };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token(kind) {
  return sessionStorage.getItem(KEYS[kind]) || (kind === "admin" ? null : sessionStorage.getItem(KEYS.admin));
}

/** Asks for a token once; false if the user declined. */
export function askToken(kind) {
  const what = kind === "admin"
    ? "This action needs the admin token. It is kept for this browser session only."
    : "Reading needs a token. It is kept for this browser session only.";
  const t = window.prompt(what);
  if (!t || !t.trim()) return false;
  sessionStorage.setItem(KEYS[kind], t.trim());
  return true;
}

function headers(kind, extra) {
  const h = Object.assign({}, extra);
  const t = token(kind);
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(r) {
  let msg = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch (_) { /* not JSON */ }
  return new ApiError(r.status, msg);
}

/** GET or POST a documented route; JSON in and out. `admin` sends the admin token. */
export async function call(path, { method = "GET", body, admin = false } = {}) {
  const kind = admin ? "admin" : "read";
  for (let attempt = 0; ; attempt++) {
    const h = headers(kind, body === undefined ? {} : { "Content-Type": "application/json" });
    const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    // Refused: ask for a token (again, if the one kept was wrong), a few times at most.
    if ((r.status === 401 || r.status === 403) && attempt < 3) {
      sessionStorage.removeItem(KEYS[kind]);
      if (askToken(kind)) continue;
    }
    if (!r.ok) throw await failure(r);
    return r.status === 204 ? null : r.json();
  }
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

/**
 * Follows a Server-Sent Events route with fetch (so the token travels in a header, which
 * EventSource cannot do), reconnecting with Last-Event-ID after a drop until `end`.
 * `on(event, data)` gets each event; `state(s)` gets "live", "reconnecting", "ended",
 * "failed". Returns a handle with `stop()`.
 */
export function follow(path, { after = null, on, state = () => {} }) {
  let lastId = after;
  let stopped = false;
  let ctrl = null;
  (async () => {
    let delay = 500;
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const h = headers("read", { Accept: "text/event-stream" });
        if (lastId !== null && lastId !== undefined) h["Last-Event-ID"] = String(lastId);
        const r = await fetch(path, { headers: h, signal: ctrl.signal });
        if (r.status === 401 && askToken("read")) continue;
        if (r.status === 404 || r.status === 400 || r.status === 401) {
          state("failed", (await failure(r)).message);
          return;
        }
        if (!r.ok) throw await failure(r);
        state("live");
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let ev = null, data = "", id = null;
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) ev = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
              else if (line.startsWith("id:")) id = line.slice(3).trim();
            }
            if (id !== null && id !== "" && ev !== "error") lastId = id;
            if (!ev) continue;
            on(ev, data ? JSON.parse(data) : null);
            if (ev === "end") {
              stopped = true;
              state("ended");
              ctrl.abort();
              return;
            }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      if (stopped) return;
      state("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
    }
  })();
  return {
    stop() {
      stopped = true;
      if (ctrl) ctrl.abort();
    },
  };
}
