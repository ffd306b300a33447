//! The ContainerOps component contract: a stdout line `[COUT] KEY = VALUE` is an output.
//!
//! KEY is `[A-Za-z_][A-Za-z0-9_.-]*`; spaces around `=` (and after `[COUT]`) are optional;
//! VALUE is the rest of the line, trimmed, may contain `=` and may be empty. `[COUT]` text
//! without `=` (or with a key that is not a KEY) is an ordinary line. Only stdout is parsed;
//! callers enforce that.

/// The key whose value is the job's verdict.
pub const CO_RESULT: &str = "CO_RESULT";
/// Longest key taken as an output; a longer one makes the line an ordinary line.
pub const MAX_KEY_BYTES: usize = 255;
/// Longest value taken as an output (what a TEXT column holds on MySQL and TiDB); a longer
/// one makes the line an ordinary line.
pub const MAX_VALUE_BYTES: usize = 65_535;

/// An output parsed from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub key: String,
    pub value: String,
}

/// Parses one stdout line (without its newline). Invalid UTF-8 in the value is replaced
/// with U+FFFD: outputs are text, the stored line keeps the bytes.
pub fn parse(line: &[u8]) -> Option<Output> {
    let rest = line.strip_prefix(b"[COUT]")?;
    let rest = trim_start(rest);
    let key_len = rest
        .iter()
        .position(|&b| !is_key_byte(b))
        .unwrap_or(rest.len());
    if key_len == 0 || rest[0].is_ascii_digit() || rest[0] == b'.' || rest[0] == b'-' {
        return None;
    }
    if key_len > MAX_KEY_BYTES {
        return None;
    }
    let (key, after) = rest.split_at(key_len);
    let after = trim_start(after);
    let value = after.strip_prefix(b"=")?;
    let value = String::from_utf8_lossy(value).trim().to_owned();
    if value.len() > MAX_VALUE_BYTES {
        return None;
    }
    Some(Output {
        // The key is ASCII by construction.
        key: String::from_utf8_lossy(key).into_owned(),
        value,
    })
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(line: &str) -> Option<(String, String)> {
        parse(line.as_bytes()).map(|o| (o.key, o.value))
    }

    #[test]
    fn contract_examples() {
        assert_eq!(
            kv("[COUT] CO_URL = http://x/?a=b"),
            Some(("CO_URL".into(), "http://x/?a=b".into()))
        );
        assert_eq!(kv("[COUT] CO_URL=x"), Some(("CO_URL".into(), "x".into())));
        assert_eq!(kv("[COUT]CO_URL=x"), Some(("CO_URL".into(), "x".into())));
        assert_eq!(kv("[COUT] EMPTY ="), Some(("EMPTY".into(), "".into())));
        assert_eq!(
            kv("[COUT] a.b-c_d = x = y  "),
            Some(("a.b-c_d".into(), "x = y".into()))
        );
        assert_eq!(
            kv("[COUT] CO_RESULT = TRUE"),
            Some(("CO_RESULT".into(), "TRUE".into()))
        );
    }

    #[test]
    fn ordinary_lines() {
        assert_eq!(kv("[COUT] no equals sign here"), None);
        assert_eq!(kv("[COUT] 1KEY = x"), None);
        assert_eq!(kv("[COUT] = x"), None);
        assert_eq!(kv("[COUT] KEY x = y"), None);
        assert_eq!(kv(" [COUT] KEY = x"), None);
        assert_eq!(kv("COUT KEY = x"), None);
        assert_eq!(kv(&format!("[COUT] {} = x", "K".repeat(256))), None);
        assert_eq!(kv(&format!("[COUT] K = {}", "v".repeat(65_536))), None);
        assert_eq!(kv(""), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut l = b"[COUT]".to_vec();
            l.extend_from_slice(&line);
            let _ = parse(&l);
            let _ = parse(&line);
        }

        #[test]
        fn well_formed_lines_round_trip(key in "[A-Za-z_][A-Za-z0-9_.-]{0,20}", value in "[ -~]{0,40}", sp1 in " {0,2}", sp2 in " {0,2}") {
            let line = format!("[COUT] {key}{sp1}={sp2}{value}");
            let out = parse(line.as_bytes()).unwrap();
            proptest::prop_assert_eq!(out.key, key);
            proptest::prop_assert_eq!(out.value, value.trim().to_string());
        }
    }
}
