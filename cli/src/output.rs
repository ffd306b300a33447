//! What the commands print: aligned tables (colours only on a terminal), or the server's
//! JSON with `--json`.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::args::ColorChoice;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    pub color: bool,
}

impl Out {
    pub fn new(json: bool, choice: ColorChoice) -> Out {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        Out { json, color }
    }

    /// A status word, coloured by meaning when colours are on.
    pub fn status(&self, s: &str) -> String {
        if !self.color {
            return s.to_owned();
        }
        let code = match s {
            "success" | "delivered" => "32",
            "failure" | "failed" | "timeout" | "cancelled" => "31",
            "running" | "pending" | "paused" => "33",
            _ => return s.to_owned(),
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }

    pub fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// Pretty JSON on stdout.
    pub fn print_json(&self, v: &Value) {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        s.push('\n');
        let _ = std::io::stdout().write_all(s.as_bytes());
    }
}

/// A table with a header row; columns padded to their widest cell (colour codes excluded).
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, out: &Out) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| visible_len(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(visible_len(c));
            }
        }
        let mut s = String::new();
        let line = |cells: &[String], s: &mut String| {
            for (i, c) in cells.iter().enumerate().take(n) {
                s.push_str(c);
                if i + 1 < n {
                    let pad = widths[i] - visible_len(c) + 2;
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push('\n');
        };
        let header: Vec<String> = self.header.iter().map(|h| out.bold(h)).collect();
        line(&header, &mut s);
        for r in &self.rows {
            line(r, &mut s);
        }
        s
    }

    pub fn print(&self, out: &Out) {
        let _ = std::io::stdout().write_all(self.render(out).as_bytes());
    }
}

/// Characters shown, not counting ANSI colour sequences.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        if in_escape {
            if c == 'm' {
                in_escape = false;
            }
        } else if c == '\x1b' {
            in_escape = true;
        } else {
            n += 1;
        }
    }
    n
}

/// A JSON field as table text: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time shortened to seconds (`2026-11-27 11:10:25`), `-` when absent.
pub fn time(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => t[..19].replace('T', " "),
        Some(t) => t.to_owned(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_counting_colours() {
        let out = Out {
            json: false,
            color: true,
        };
        let mut t = Table::new(&["ID", "STATUS"]);
        t.row(vec!["1".into(), out.status("success")]);
        t.row(vec!["12345".into(), out.status("failure")]);
        let plain = Out {
            json: false,
            color: false,
        };
        let mut p = Table::new(&["ID", "STATUS"]);
        p.row(vec!["1".into(), "success".into()]);
        p.row(vec!["12345".into(), "failure".into()]);
        assert_eq!(
            p.render(&plain),
            "ID     STATUS\n1      success\n12345  failure\n"
        );
        let coloured = t.render(&out);
        assert!(coloured.contains("\x1b[32msuccess\x1b[0m"));
        assert_eq!(visible_len(&coloured), p.render(&plain).chars().count());
    }

    #[test]
    fn times_and_cells() {
        assert_eq!(
            time(&Value::from("2026-11-27T11:10:25.000000000Z")),
            "2026-11-27 11:10:25"
        );
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&Value::from(3)), "3");
    }
}
