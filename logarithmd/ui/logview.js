// The log viewer: a virtual list that renders only the rows in view and fetches pages of
// the log on demand, so a job of millions of lines opens at once and the DOM never holds
// more than a screenful. Rows are fixed-height.
//
// Two sources: by seq (row i is the record with seq i+1; a record that continues the line
// above is an empty row), which allows jumping anywhere; and, with a stdout/stderr filter,
// a list read page after page from the server's `stream=` filter.

import { call, follow } from "./api.js";
import { render, esc } from "./ansi.js";

const ROW = 18;            // px per row (matches CSS --row)
const PAGE = 500;          // records per page fetched by seq
const MAX_PAGES = 80;      // pages kept in memory at most (40,000 records)
const MAX_PX = 8e6;        // tallest spacer: beyond it scroll positions are scaled
const MAX_MATCHES = 10000; // search matches collected at most

function decode(l) {
  if (l.text !== undefined) return l.text;
  try {
    const bin = atob(l.b64);
    return new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
  } catch (_) {
    return "";
  }
}

function fmtTs(ns) {
  const ms = Math.floor(Number(ns) / 1e6);
  const d = new Date(ms);
  return isNaN(d) ? "" : d.toISOString().replace("T", " ").replace("Z", "");
}

/** Rows by seq: row i is seq i+1. */
class SeqSource {
  constructor(base) {
    this.base = base;
    this.total = 0;
    this.pages = new Map(); // page -> Map(seq -> line) | "loading"
    this.recent = new Map(); // seq -> line pushed live while its page was not loaded
  }
  count() { return this.total; }
  seqAt(i) { return i + 1; }
  indexOfSeq(seq) { return seq >= 1 && seq <= this.total ? seq - 1 : -1; }
  /** The line at row i; undefined while its page loads; null for a continuation row. */
  at(i) {
    const p = this.pages.get(Math.floor(i / PAGE));
    if (!p || p === "loading") return undefined;
    const l = p.get(i + 1) || this.recent.get(i + 1);
    return l === undefined ? null : l;
  }
  async ensure(from, to, changed) {
    const want = [];
    for (let p = Math.floor(from / PAGE); p <= Math.floor(Math.max(from, to) / PAGE); p++) {
      if (!this.pages.has(p)) want.push(p);
      else { const v = this.pages.get(p); this.pages.delete(p); this.pages.set(p, v); } // LRU touch
    }
    await Promise.all(want.map(async (p) => {
      this.pages.set(p, "loading");
      try {
        const r = await call(`${this.base}?after=${p * PAGE}&limit=${PAGE}`);
        const m = this.pages.get(p) instanceof Map ? this.pages.get(p) : new Map();
        for (const l of r.lines) m.set(l.seq, l);
        this.pages.set(p, m);
      } catch (e) {
        this.pages.delete(p);
        throw e;
      }
      while (this.pages.size > MAX_PAGES) this.pages.delete(this.pages.keys().next().value);
      changed();
    }));
  }
  /** A line pushed live. */
  push(l) {
    this.total = Math.max(this.total, l.last_seq);
    const p = this.pages.get(Math.floor((l.seq - 1) / PAGE));
    if (p instanceof Map) p.set(l.seq, l);
    else {
      // Its page is loading or not loaded: keep it until the page comes.
      this.recent.set(l.seq, l);
      if (this.recent.size > 20000) this.recent.delete(this.recent.keys().next().value);
    }
  }
}

/** Rows of one stream, read in order. */
class ListSource {
  constructor(base, stream) {
    this.base = base;
    this.stream = stream;
    this.lines = [];
    this.after = 0;
    this.more = true;
    this.loading = false;
  }
  count() { return this.lines.length + (this.more ? 1 : 0); }
  seqAt(i) { return this.lines[i] ? this.lines[i].seq : -1; }
  indexOfSeq(seq) {
    let lo = 0, hi = this.lines.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.lines[mid].seq;
      if (s === seq) return mid;
      if (s < seq) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }
  at(i) { return i < this.lines.length ? this.lines[i] : undefined; }
  async ensure(from, to, changed) {
    if (!this.more || this.loading || to < this.lines.length - 1) return;
    this.loading = true;
    try {
      const r = await call(`${this.base}?after=${this.after}&limit=1000&stream=${this.stream}`);
      this.lines.push(...r.lines);
      this.after = r.next_after;
      this.more = r.more;
    } finally {
      this.loading = false;
    }
    changed();
  }
  push(l) {
    if (!this.more && l.stream === this.stream && l.seq > this.after) {
      this.lines.push(l);
      this.after = l.last_seq;
    }
  }
}

export class LogView {
  /**
   * `root`: the element to fill. `job`: the job as the API shows it. `onEnd(job)`: called
   * with the final job when a live follow ends.
   */
  constructor(root, job, { onEnd = () => {}, onLive = () => {} } = {}) {
    this.job = job;
    this.base = `/api/v1/jobs/${job.id}/logs`;
    this.onEnd = onEnd;
    this.onLive = onLive;
    this.sel = null;         // [fromSeq, toSeq] selected by a permalink
    this.re = null;          // search highlight
    this.matches = [];       // seqs of search matches
    this.current = -1;       // index into matches
    this.following = false;
    this.live = null;
    this.stickToEnd = false;
    this.liveSeqs = [];      // seqs received live, in order (the last 10,000; for tests)
    root.innerHTML = `
      <div class="logview" tabindex="0"><div class="spacer"></div><div class="rows"></div></div>`;
    this.el = root.querySelector(".logview");
    this.spacer = root.querySelector(".spacer");
    this.rowsEl = root.querySelector(".rows");
    this.source = new SeqSource(this.base);
    this.source.total = job.last_seq;
    this.el.addEventListener("scroll", () => {
      const atEnd = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - ROW * 2;
      if (!this.programmatic) this.stickToEnd = atEnd;
      this.programmatic = false;
      this.schedule();
    });
    this.rowsEl.addEventListener("click", (e) => this.clickLine(e));
    window.addEventListener("resize", () => this.schedule());
    this.layout();
  }

  setStream(stream) {
    this.source = stream ? new ListSource(this.base, stream) : new SeqSource(this.base);
    if (!stream) this.source.total = this.job.last_seq;
    this.el.scrollTop = 0;
    this.layout();
  }

  setTimestamps(on) {
    this.el.classList.toggle("with-ts", on);
  }

  /** Total scroll height and the mapping from scroll position to row. */
  layout() {
    const real = this.source.count() * ROW;
    this.spacer.style.height = `${Math.min(real, MAX_PX)}px`;
    this.schedule();
  }

  scale() {
    const view = this.el.clientHeight;
    const real = this.source.count() * ROW;
    const virt = Math.min(real, MAX_PX);
    if (virt <= view || real <= MAX_PX) return 1;
    return (real - view) / (virt - view);
  }

  firstRow() {
    return Math.floor((this.el.scrollTop * this.scale()) / ROW);
  }

  scrollToRow(i, center = true) {
    const view = this.el.clientHeight;
    const target = Math.max(0, i * ROW - (center ? view / 2 - ROW : 0));
    this.programmatic = true;
    this.el.scrollTop = target / this.scale();
    this.schedule();
  }

  scrollToEnd() {
    this.programmatic = true;
    this.el.scrollTop = this.el.scrollHeight;
    this.stickToEnd = true;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const n = this.source.count();
    const scale = this.scale();
    const first = Math.min(this.firstRow(), Math.max(0, n - 1));
    const visible = Math.ceil(this.el.clientHeight / ROW) + 2;
    const last = Math.min(n - 1, first + visible);
    // The rows block sits where the first row belongs in scroll coordinates.
    const offset = this.el.scrollTop - ((this.el.scrollTop * scale) % ROW);
    this.rowsEl.style.transform = `translateY(${scale === 1 ? first * ROW : offset}px)`;
    let html = "";
    let missing = false;
    const cur = this.current >= 0 ? this.matches[this.current] : -1;
    for (let i = first; i <= last; i++) {
      const l = this.source.at(i);
      if (l === undefined) {
        missing = true;
        html += `<div class="row loading"><span class="ln"></span><span class="tx">…</span></div>`;
        continue;
      }
      if (l === null) {
        html += `<div class="row cont"><span class="ln"></span><span class="tx"></span></div>`;
        continue;
      }
      const cls = ["row", l.stream];
      if (this.sel && l.seq >= this.sel[0] && l.seq <= this.sel[1]) cls.push("sel");
      if (l.seq === cur) cls.push("current");
      html += `<div class="${cls.join(" ")}" data-seq="${l.seq}"><a class="ln" href="#L${l.seq}">${l.seq}</a>` +
        `<span class="ts">${esc(fmtTs(l.ts))}</span><span class="tx">${render(decode(l), this.re)}</span></div>`;
    }
    this.rowsEl.innerHTML = html;
    if (!missing && n > 0 && window.firstRowsAt === undefined) window.firstRowsAt = performance.now();
    if (missing || this.source instanceof ListSource) {
      this.source.ensure(first, last, () => { this.layout(); }).catch((e) => this.error(e));
    }
  }

  error(e) {
    const st = document.querySelector("#log-state");
    if (st) st.textContent = `error: ${e.message}`;
  }

  clickLine(e) {
    const a = e.target.closest("a.ln");
    if (!a) return;
    e.preventDefault();
    const seq = Number(a.closest(".row").dataset.seq);
    if (e.shiftKey && this.sel) {
      const from = Math.min(this.sel[0], seq), to = Math.max(this.sel[0], seq);
      this.sel = [from, to];
    } else {
      this.sel = [seq, seq];
    }
    const hash = this.sel[0] === this.sel[1] ? `#L${this.sel[0]}` : `#L${this.sel[0]}-L${this.sel[1]}`;
    history.replaceState(history.state, "", hash);
    this.schedule();
  }

  /** Selects and scrolls to `#L120` or `#L120-L140`. */
  applyHash(hash) {
    const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash || "");
    if (!m) return;
    const a = Number(m[1]), b = m[2] ? Number(m[2]) : a;
    this.sel = [Math.min(a, b), Math.max(a, b)];
    const i = this.source.indexOfSeq(this.sel[0]);
    if (i >= 0) this.scrollToRow(i);
  }

  // ---- search ----

  /** Starts a search; returns the number of matches found (capped at MAX_MATCHES). */
  async search(text, isRegex, progress = () => {}) {
    this.matches = [];
    this.current = -1;
    this.re = null;
    if (!text) { this.schedule(); return 0; }
    try {
      this.re = new RegExp(isRegex ? text : text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "g");
    } catch (_) {
      this.re = null; // Rust regex syntax the browser does not know: no highlight
    }
    const param = isRegex ? "regex" : "contains";
    const token = (this.searchToken = {});
    let after = 0;
    for (;;) {
      const r = await call(`${this.base}?${param}=${encodeURIComponent(text)}&after=${after}&limit=1000`);
      if (token !== this.searchToken) return this.matches.length;
      for (const l of r.lines) this.matches.push(l.seq);
      after = r.next_after;
      progress(this.matches.length, r.more);
      if (!r.more || this.matches.length >= MAX_MATCHES) break;
    }
    this.schedule();
    return this.matches.length;
  }

  /** Moves to the next (+1) or previous (-1) match; returns [index, total]. */
  step(dir) {
    if (!this.matches.length) return [0, 0];
    this.current = (this.current + dir + this.matches.length) % this.matches.length;
    const seq = this.matches[this.current];
    let i = this.source.indexOfSeq(seq);
    if (i < 0 && this.source instanceof SeqSource) i = seq - 1;
    if (i >= 0) this.scrollToRow(i);
    this.schedule();
    return [this.current + 1, this.matches.length];
  }

  // ---- live follow ----

  startFollow() {
    if (this.live || this.job.status !== "running") return;
    this.following = true;
    this.stickToEnd = true;
    let lastDraw = 0;
    this.live = follow(`${this.base}/stream`, {
      after: this.job.last_seq,
      on: (ev, data) => {
        if (ev === "line") {
          this.liveSeqs.push(data.seq);
          if (this.liveSeqs.length > 10000) this.liveSeqs.shift();
          this.source.push(data);
          this.job.last_seq = Math.max(this.job.last_seq, data.last_seq);
          const now = performance.now();
          if (now - lastDraw > 50) {
            lastDraw = now;
            this.layout();
            if (this.following && this.stickToEnd) this.scrollToEnd();
          } else if (!this.tick) {
            this.tick = setTimeout(() => {
              this.tick = null;
              this.layout();
              if (this.following && this.stickToEnd) this.scrollToEnd();
            }, 60);
          }
        } else if (ev === "end") {
          this.job = data;
          this.layout();
          if (this.following && this.stickToEnd) this.scrollToEnd();
          this.onEnd(data);
        }
      },
      state: (s, why) => this.onLive(s, why),
    });
  }

  setFollowing(on) {
    this.following = on;
    if (on) {
      this.startFollow();
      this.scrollToEnd();
    }
  }

  stop() {
    if (this.live) this.live.stop();
    this.live = null;
  }
}
