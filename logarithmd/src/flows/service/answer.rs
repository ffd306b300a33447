//! What a service answers with, at once (a 2xx other than 202) or in its callback: the same
//! JSON either way.
//!
//! ```json
//! { "result": true, "outputs": { "URL": "https://…", "COUNT": 3 }, "message": "deployed" }
//! ```
//!
//! `result` decides the verdict as `CO_RESULT` does for a component (`true` or `false`;
//! the strings `"true"`/`"false"` are accepted too). `outputs` become the job's outputs
//! (`[COUT] KEY = VALUE`): keys are environment-variable names, values strings, numbers or
//! booleans. `message` (optional) is recorded in the job's log. Everything is bounded.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Largest answer body read, in bytes.
pub const BODY_MAX: usize = 1 << 20;
/// Most outputs one answer may set.
pub const OUTPUTS_MAX: usize = 256;
/// Longest output value, in bytes.
pub const VALUE_MAX: usize = 64 << 10;
/// Longest message kept, in characters.
const MESSAGE_MAX: usize = 2000;

/// A valid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub result: bool,
    pub outputs: BTreeMap<String, String>,
    pub message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    result: Value,
    #[serde(default)]
    outputs: BTreeMap<String, Value>,
    #[serde(default)]
    message: Option<String>,
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() <= 128
        && k != "CO_RESULT"
}

impl Answer {
    /// Parses and checks an answer body; the error says what is wrong, for the service.
    pub fn parse(body: &[u8]) -> Result<Answer, String> {
        if body.len() > BODY_MAX {
            return Err(format!("the answer is larger than {BODY_MAX} bytes"));
        }
        let raw: Raw = serde_json::from_slice(body).map_err(|e| {
            format!("the answer is not the expected JSON ({{\"result\": true|false, \"outputs\": {{…}}}}): {e}")
        })?;
        let result = match &raw.result {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            other => return Err(format!("result must be true or false, not {other}")),
        };
        if raw.outputs.len() > OUTPUTS_MAX {
            return Err(format!("at most {OUTPUTS_MAX} outputs are accepted"));
        }
        let mut outputs = BTreeMap::new();
        for (k, v) in raw.outputs {
            if !valid_key(&k) {
                return Err(format!(
                    "output {k:?} is not a valid key (letters, digits and '_', not CO_RESULT)"
                ));
            }
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "output {k}: a value is a string, number or boolean, not {other}"
                    ))
                }
            };
            if v.len() > VALUE_MAX || v.contains('\n') {
                return Err(format!(
                    "output {k}: a value is one line of at most {VALUE_MAX} bytes"
                ));
            }
            outputs.insert(k, v);
        }
        let message = raw
            .message
            .map(|m| m.chars().take(MESSAGE_MAX).collect::<String>())
            .filter(|m| !m.trim().is_empty());
        Ok(Answer {
            result,
            outputs,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_outputs_and_message() {
        let a = Answer::parse(
            br#"{"result": true, "outputs": {"URL": "https://x", "N": 3, "OK": false}, "message": "done"}"#,
        )
        .unwrap();
        assert!(a.result);
        assert_eq!(a.outputs["URL"], "https://x");
        assert_eq!(a.outputs["N"], "3");
        assert_eq!(a.outputs["OK"], "false");
        assert_eq!(a.message.as_deref(), Some("done"));
        assert!(!Answer::parse(br#"{"result": "FALSE"}"#).unwrap().result);
    }

    #[test]
    fn bad_answers_say_why() {
        for (body, msg) in [
            (&br#"{"outputs": {}}"#[..], "missing field `result`"),
            (br#"{"result": 1}"#, "result must be true or false"),
            (
                br#"{"result": true, "outputs": {"CO_RESULT": "x"}}"#,
                "not a valid key",
            ),
            (
                br#"{"result": true, "outputs": {"A": [1]}}"#,
                "string, number or boolean",
            ),
            (br#"{"result": true, "extra": 1}"#, "unknown field `extra`"),
            (b"not json", "not the expected JSON"),
        ] {
            let e = Answer::parse(body).unwrap_err();
            assert!(e.contains(msg), "{e}");
        }
    }
}
