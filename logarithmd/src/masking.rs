//! Secret masks, applied at ingest before anything is stored: every match is replaced by
//! `***` in the lines of a job, in its `[COUT]` outputs and in its `CO_RESULT`.
//!
//! - Global masks come from `[masking]`: literals, names of logarithmd's environment
//!   variables, a secrets file (one value per line), and regexes; with `base64` (the
//!   default) each value's base64 encoding (standard and URL-safe, padded or not) is masked
//!   too. They apply to every job.
//! - A flow job's `secrets:` add that job's values ([`run_masks`]: from the container's
//!   `io.containerops.*` labels to the run, its flow and logarithmd's `[engine.secrets]`).
//!
//! A line that the agent split into continuation records (Docker's 16 KiB split, or
//! `max_line_bytes`) is masked whole when its records arrive in the same batch: the records
//! are joined, masked, and cut again where they were cut. When the cut falls between two
//! batches ([`edges`]), the bytes on each side of it that could be a piece of a value are
//! masked too (fail closed): the database never holds a piece of a value either.

use std::path::PathBuf;

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use storage::{JobWrite, NewLine, WriteBatch};

mod bounded;
pub mod edges;
pub mod run_masks;

/// What replaces a secret.
pub const MASK: &[u8] = b"***";
/// Shortest literal value accepted (shorter ones would mask ordinary text).
pub const MIN_SECRET_LEN: usize = 4;

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

/// One value to mask, and whether its base64 encodings are masked too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub base64: bool,
}

/// The compiled masks; [`Masker::none`] masks nothing.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    re: Option<Regex>,
    /// The values and regexes it was built from (so a job's own values can be added).
    values: Vec<Value>,
    regexes: Vec<String>,
    /// Every literal alternative (values and their encodings), for [`edges`].
    literals: Vec<Vec<u8>>,
}

impl Masker {
    pub fn none() -> Masker {
        Masker::default()
    }

    /// Reads the values (environment, file) and compiles one regex for all of them.
    pub fn from_config(c: &MaskingConfig) -> Result<Masker, String> {
        let mut texts: Vec<String> = c.literals.clone();
        for name in &c.env {
            match std::env::var(name) {
                Ok(v) => texts.push(v),
                Err(_) => return Err(format!("masking.env: {name} is not set")),
            }
        }
        if let Some(path) = &c.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("masking.file {}: {e}", path.display()))?;
            texts.extend(
                text.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        let values: Vec<Value> = texts
            .into_iter()
            .map(|text| Value {
                text,
                base64: c.base64,
            })
            .collect();
        Masker::build(values, c.regexes.clone())
    }

    /// These masks and `extra` values (a flow job's secrets).
    pub fn with_values(&self, extra: &[Value]) -> Result<Masker, String> {
        if extra.is_empty() {
            return Ok(self.clone());
        }
        let mut values = self.values.clone();
        values.extend(extra.iter().cloned());
        Masker::build(values, self.regexes.clone())
    }

    fn build(values: Vec<Value>, regexes: Vec<String>) -> Result<Masker, String> {
        if let Some(short) = values.iter().find(|v| v.text.len() < MIN_SECRET_LEN) {
            return Err(format!(
                "a masked value is shorter than {MIN_SECRET_LEN} characters ({} characters)",
                short.text.len()
            ));
        }
        let mut literals: Vec<String> = Vec::new();
        for v in &values {
            literals.push(v.text.clone());
            if v.base64 {
                for engine in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE,
                ] {
                    let enc = engine.encode(v.text.as_bytes());
                    // The padded form is listed before the unpadded one (longest first
                    // below), so padding present is masked with the value.
                    literals.push(enc.trim_end_matches('=').to_owned());
                    literals.push(enc);
                }
            }
        }
        literals.sort_by_key(|a| std::cmp::Reverse(a.len()));
        literals.dedup();
        let mut alternatives: Vec<String> = literals.iter().map(|l| regex::escape(l)).collect();
        for r in &regexes {
            RegexBuilder::new(r)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("masking.regexes {r:?}: {e}"))?;
            alternatives.push(format!("(?:{r})"));
        }
        if alternatives.is_empty() {
            return Ok(Masker::none());
        }
        // Literals longest first, so a value that contains another is masked whole.
        let re = RegexBuilder::new(&alternatives.join("|"))
            .size_limit(16 << 20)
            .build()
            .map_err(|e| format!("masking: {e}"))?;
        Ok(Masker {
            re: Some(re),
            values,
            regexes,
            literals: literals.into_iter().map(String::into_bytes).collect(),
        })
    }

    /// Length of the longest literal alternative (0 without literals).
    pub fn longest_literal(&self) -> usize {
        self.literals.first().map_or(0, Vec::len)
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

    /// Masks a whole batch in place with these masks, as if no line of it continued a
    /// line of an earlier batch (service jobs' records, which are written whole).
    pub fn mask_batch(&self, batch: &mut WriteBatch) {
        if !self.is_active() {
            return;
        }
        for job in &mut batch.jobs {
            self.mask_job(job, false);
        }
    }

    /// Masks one job's part of a batch. `continues`: its first record continues a line
    /// whose earlier records came in an earlier batch (see [`edges`]).
    pub fn mask_job(&self, job: &mut JobWrite, continues: bool) {
        if !self.is_active() {
            return;
        }
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
            let head = start == 0 && continues;
            let tail = end + 1 == job.lines.len() && job.lines[end].cont;
            self.mask_line(&mut job.lines[start..=end], head, tail);
            start = end + 1;
        }
    }

    /// Masks one line that may span several records, keeping its records and their cuts
    /// (a shorter masked line leaves the last records shorter or empty). `head`/`tail`: the
    /// line began in an earlier batch / goes on in a later one.
    fn mask_line(&self, records: &mut [NewLine], head: bool, tail: bool) {
        if let [one] = records {
            let masked = self.mask_bytes(&one.line);
            match edges::mask_edges(&self.literals, &masked, head, tail) {
                Some(m) => one.line = m,
                None => {
                    if let std::borrow::Cow::Owned(m) = masked {
                        one.line = m;
                    }
                }
            }
            return;
        }
        let joined: Vec<u8> = records
            .iter()
            .flat_map(|r| r.line.iter().copied())
            .collect();
        let masked = self.mask_bytes(&joined);
        let masked = match edges::mask_edges(&self.literals, &masked, head, tail) {
            Some(m) => m,
            None => match masked {
                std::borrow::Cow::Owned(m) => m,
                std::borrow::Cow::Borrowed(_) => return,
            },
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
        m.mask_job(&mut job, false);
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
    fn a_value_cut_between_batches_is_masked_on_both_sides() {
        let m = masker(&["hunter2-secret"], &[]);
        let mut first = JobWrite::new("c", "n");
        first.lines = vec![rec(1, false, "one"), rec(2, true, "aaaa hunter2-")];
        m.mask_job(&mut first, false);
        let mut second = JobWrite::new("c", "n");
        second.lines = vec![rec(3, false, "secret bbbb"), rec(4, false, "secret")];
        m.mask_job(&mut second, true);
        let texts =
            |j: &JobWrite| -> Vec<Vec<u8>> { j.lines.iter().map(|l| l.line.clone()).collect() };
        assert_eq!(texts(&first), [b"one".to_vec(), b"aaaa ***".to_vec()]);
        // Only the first record of the batch continues a line.
        assert_eq!(texts(&second), [b"*** bbbb".to_vec(), b"secret".to_vec()]);
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
