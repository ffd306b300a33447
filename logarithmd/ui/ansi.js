// ANSI SGR rendering: 16, 256 and 24-bit colours, bold, dim, italic, underline, inverse.
// Every other escape sequence (cursor moves, OSC titles and links, ...) and every other
// control character is stripped, never shown raw. Attributes reset at each line.

const PALETTE = [
  "#1e1e1e", "#cd3131", "#0dbc79", "#c8a600", "#2472c8", "#bc3fbc", "#11a8cd", "#cccccc",
  "#666666", "#f14c4c", "#23d18b", "#e5e510", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];

function color256(n) {
  if (n < 16) return PALETTE[n];
  if (n < 232) {
    const v = n - 16;
    const c = (x) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${c(Math.floor(v / 36))},${c(Math.floor(v / 6) % 6)},${c(v % 6)})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}

// CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte escapes, C0 controls.
const ESCAPES = /\x1b\[([0-9;:?<=>]*)[ -\/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

function applySgr(st, params) {
  const p = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) Object.assign(st, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });
    else if (n === 1) st.bold = true;
    else if (n === 2) st.dim = true;
    else if (n === 3) st.italic = true;
    else if (n === 4) st.underline = true;
    else if (n === 7) st.inverse = true;
    else if (n === 22) { st.bold = false; st.dim = false; }
    else if (n === 23) st.italic = false;
    else if (n === 24) st.underline = false;
    else if (n === 27) st.inverse = false;
    else if (n >= 30 && n <= 37) st.fg = PALETTE[n - 30];
    else if (n >= 90 && n <= 97) st.fg = PALETTE[n - 90 + 8];
    else if (n >= 40 && n <= 47) st.bg = PALETTE[n - 40];
    else if (n >= 100 && n <= 107) st.bg = PALETTE[n - 100 + 8];
    else if (n === 39) st.fg = null;
    else if (n === 49) st.bg = null;
    else if (n === 38 || n === 48) {
      let c = null;
      if (p[i + 1] === 5 && i + 2 < p.length) { c = color256(p[i + 2] & 255); i += 2; }
      else if (p[i + 1] === 2 && i + 4 < p.length) { c = `rgb(${p[i + 2] & 255},${p[i + 3] & 255},${p[i + 4] & 255})`; i += 4; }
      if (n === 38) st.fg = c; else st.bg = c;
    }
  }
}

function styleOf(st) {
  let fg = st.fg, bg = st.bg;
  if (st.inverse) { [fg, bg] = [bg || "var(--bg)", fg || "var(--fg)"]; }
  const s = [];
  if (fg) s.push(`color:${fg}`);
  if (bg) s.push(`background:${bg}`);
  if (st.bold) s.push("font-weight:bold");
  if (st.dim) s.push("opacity:.7");
  if (st.italic) s.push("font-style:italic");
  if (st.underline) s.push("text-decoration:underline");
  return s.join(";");
}

/** Splits a line into [{text, style}] segments with escapes removed. */
export function segments(line) {
  const out = [];
  const st = {};
  applySgr(st, "0");
  let last = 0;
  let style = "";
  ESCAPES.lastIndex = 0;
  for (let m; (m = ESCAPES.exec(line)); ) {
    if (m.index > last) out.push({ text: line.slice(last, m.index), style });
    last = ESCAPES.lastIndex;
    if (m[2] === "m" && !/[?<=>]/.test(m[1] || "")) {
      applySgr(st, m[1]);
      style = styleOf(st);
    }
  }
  if (last < line.length) out.push({ text: line.slice(last), style });
  return out;
}

/** The line without escapes. */
export function plain(line) {
  return segments(line).map((s) => s.text).join("");
}

const ENT = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
export function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ENT[c]);
}

/**
 * HTML for a line: coloured spans, and `<mark>` around the ranges of `re` (a global
 * RegExp applied to the text without escapes), the `current` one marked as such.
 */
export function render(line, re) {
  const segs = segments(line);
  const text = segs.map((s) => s.text).join("");
  const marks = [];
  if (re) {
    re.lastIndex = 0;
    for (let m; (m = re.exec(text)); ) {
      if (m[0].length === 0) { re.lastIndex++; continue; }
      marks.push([m.index, m.index + m[0].length]);
      if (marks.length > 1000) break;
    }
  }
  let html = "";
  let pos = 0;
  let mi = 0;
  for (const s of segs) {
    let i = 0;
    while (i < s.text.length) {
      const abs = pos + i;
      while (mi < marks.length && marks[mi][1] <= abs) mi++;
      let end = s.text.length;
      let inMark = false;
      if (mi < marks.length) {
        if (marks[mi][0] <= abs) { inMark = true; end = Math.min(end, marks[mi][1] - pos); }
        else end = Math.min(end, marks[mi][0] - pos);
      }
      let piece = esc(s.text.slice(i, end));
      if (inMark) piece = `<mark>${piece}</mark>`;
      html += s.style ? `<span style="${s.style}">${piece}</span>` : piece;
      i = end;
    }
    pos += s.text.length;
  }
  return html;
}
