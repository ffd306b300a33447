//! Global secret masks, applied at ingest before anything is stored: every match is
//! replaced by `***` in the lines of every job, in `[COUT]` outputs and in `CO_RESULT`.
//! Values come from `[masking]`: literals, names of logarithmd's environment variables, a
//! secrets file (one value per line), and regexes; with `base64` (the default) each value's
//! base64 encoding (standard and URL-safe, padded or not) is masked too.
//!
//! A line that the agent split into continuation records (Docker's 16 KiB split, or
//! `max_line_bytes`) is masked whole when its records arrive in the same batch: the records
//! are joined, masked, and cut again where they were cut.

use std::path::PathBuf;

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use storage::{JobWrite, NewLine, WriteBatch};

/// What replaces a secret.
pub const MASK: &[u8] = b"***";
/// Shortest literal value accepted (shorter ones would mask ordinary text).
const MIN_SECRET_LEN: usize = 4;

/// `[masking]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Values masked in every job's output (at least 4 characters each). Prefer `env` or
    /// `file`, which keep the values out of this file.
    #[serde(default)]
    pub literals: Vec<String>,
    /// Names of logarithmd's environment variables whose values are masked.
    #[serde(default)]
    pub env: Vec<String>,
    /// A file of values to mask, one per line (blank lines ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Regular expressions whose matches are masked (e.g. `ghp_[A-Za-z0-9]{36}`).
    #[serde(default)]
    pub regexes: Vec<String>,
    /// Also mask the base64 encodings of literal, `env` and `file` values.
    #[serde(default = "default_true")]
    pub base64: bool,
}

fn default_true() -> bool {
    true
}

/// The compiled masks; [`Masker::none`] masks nothing.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    re: Option<Regex>,
}

impl Masker {
    pub fn none() -> Masker {
        Masker { re: None }
    }

    /// Reads the values (environment, file) and compiles one regex for all of them.
    pub fn from_config(c: &MaskingConfig) -> Result<Masker, String> {
        let mut values: Vec<String> = c.literals.clone();
        for name in &c.env {
            match std::env::var(name) {
                Ok(v) => values.push(v),
                Err(_) => return Err(format!("masking.env: {name} is not set")),
            }
        }
        if let Some(path) = &c.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("masking.file {}: {e}", path.display()))?;
            values.extend(
                text.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(short) = values.iter().find(|v| v.len() < MIN_SECRET_LEN) {
            return Err(format!(
                "a masked value is shorter than {MIN_SECRET_LEN} characters ({} characters)",
                short.len()
            ));
        }
        let mut alternatives: Vec<String> = Vec::new();
        for v in &values {
            alternatives.push(regex::escape(v));
            if c.base64 {
                for engine in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE,
                ] {
                    let enc = engine.encode(v.as_bytes());
                    // Unpadded first is covered by the padded form's prefix; mask the
                    // padding with it when present.
                    alternatives.push(regex::escape(&enc));
                    alternatives.push(regex::escape(enc.trim_end_matches('=')));
                }
            }
        }
        for r in &c.regexes {
            RegexBuilder::new(r)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("masking.regexes {r:?}: {e}"))?;
            alternatives.push(format!("(?:{r})"));
        }
        if alternatives.is_empty() {
            return Ok(Masker::none());
        }
        // Longest first, so a value that contains another is masked whole.
        alternatives.sort_by_key(|a| std::cmp::Reverse(a.len()));
        alternatives.dedup();
        let re = RegexBuilder::new(&alternatives.join("|"))
            .size_limit(16 << 20)
            .build()
            .map_err(|e| format!("masking: {e}"))?;
        Ok(Masker { re: Some(re) })
    }

    /// Whether any mask is configured.
    pub fn is_active(&self) -> bool {
        self.re.is_some()
    }

    /// `bytes` with every match replaced by `***`.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match &self.re {
            Some(re) => re.replace_all(bytes, MASK),
            None => std::borrow::Cow::Borrowed(bytes),
        }
    }

    fn mask_string(&self, s: &mut String) {
        if let std::borrow::Cow::Owned(m) = self.mask_bytes(s.as_bytes()) {
            *s = String::from_utf8_lossy(&m).into_owned();
        }
    }

    /// Masks a whole batch in place, before it is stored.
    pub fn mask_batch(&self, batch: &mut WriteBatch) {
        if !self.is_active() {
            return;
        }
        for job in &mut batch.jobs {
            self.mask_job(job);
        }
    }

    fn mask_job(&self, job: &mut JobWrite) {
        for o in &mut job.outputs {
            self.mask_string(&mut o.value);
        }
        if let Some(c) = &mut job.co_result {
            self.mask_string(&mut c.value);
        }
        // Each line: one record, or a run of continuation records ending with one that
        // does not continue (or with the batch).
        let mut start = 0;
        while start < job.lines.len() {
            let mut end = start;
            while end + 1 < job.lines.len() && job.lines[end].cont {
                end += 1;
            }
            self.mask_line(&mut job.lines[start..=end]);
            start = end + 1;
        }
    }

    /// Masks one line that may span several records, keeping its records and their cuts
    /// (a shorter masked line leaves the last records shorter or empty).
    fn mask_line(&self, records: &mut [NewLine]) {
        if let [one] = records {
            if let std::borrow::Cow::Owned(m) = self.mask_bytes(&one.line) {
                one.line = m;
            }
            return;
        }
        let joined: Vec<u8> = records
            .iter()
            .flat_map(|r| r.line.iter().copied())
            .collect();
        let std::borrow::Cow::Owned(masked) = self.mask_bytes(&joined) else {
            return;
        };
        let mut rest: &[u8] = &masked;
        let last = records.len() - 1;
        for (i, r) in records.iter_mut().enumerate() {
            let take = if i == last {
                rest.len()
            } else {
                r.line.len().min(rest.len())
            };
            r.line = rest[..take].to_vec();
            rest = &rest[take..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Stream;

    fn masker(literals: &[&str], regexes: &[&str]) -> Masker {
        Masker::from_config(&MaskingConfig {
            literals: literals.iter().map(|s| s.to_string()).collect(),
            regexes: regexes.iter().map(|s| s.to_string()).collect(),
            base64: true,
            ..MaskingConfig::default()
        })
        .unwrap()
    }

    fn rec(seq: u64, cont: bool, text: &str) -> NewLine {
        NewLine {
            seq,
            ts: 1,
            stream: Stream::Stdout,
            cont,
            line: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn literals_inside_words_base64_and_regexes() {
        let m = masker(&["hunter2-secret"], &["ghp_[a-z0-9]{6}"]);
        let b64 = base64::engine::general_purpose::STANDARD.encode("hunter2-secret");
        let line = format!("x=prefixhunter2-secretsuffix b={b64} t=ghp_abc123 ok");
        assert_eq!(
            m.mask_bytes(line.as_bytes()).as_ref(),
            b"x=prefix***suffix b=*** t=*** ok"
        );
        assert_eq!(m.mask_bytes(b"nothing here").as_ref(), b"nothing here");
    }

    #[test]
    fn a_value_cut_between_continuation_records_is_masked() {
        let m = masker(&["hunter2-secret"], &[]);
        let mut job = JobWrite::new("c", "n");
        job.lines = vec![
            rec(1, false, "before"),
            rec(2, true, "aaaa hunter2-"),
            rec(3, true, "sec"),
            rec(4, false, "ret bbbb"),
            rec(5, false, "after hunter2-secret"),
        ];
        m.mask_job(&mut job);
        let texts: Vec<&[u8]> = job.lines.iter().map(|l| l.line.as_slice()).collect();
        // The first record takes what fits its old length; the others keep their place.
        assert_eq!(
            texts,
            vec![
                b"before".as_slice(),
                b"aaaa *** bbbb".as_slice(),
                b"".as_slice(),
                b"".as_slice(),
                b"after ***".as_slice()
            ]
        );
        let joined: Vec<u8> = job.lines[1..4]
            .iter()
            .flat_map(|l| l.line.clone())
            .collect();
        assert_eq!(joined, b"aaaa *** bbbb");
        assert_eq!(
            job.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn short_values_and_bad_regexes_are_refused() {
        let short = MaskingConfig {
            literals: vec!["abc".into()],
            ..MaskingConfig::default()
        };
        assert!(Masker::from_config(&short)
            .unwrap_err()
            .contains("shorter than 4"));
        let bad = MaskingConfig {
            regexes: vec!["(".into()],
            ..MaskingConfig::default()
        };
        assert!(Masker::from_config(&bad).is_err());
        assert!(!Masker::from_config(&MaskingConfig::default())
            .unwrap()
            .is_active());
    }
}
