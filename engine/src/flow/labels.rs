//! `labels:` on a flow, a stage or a job: Kubernetes-style labels that become container (or
//! Pod) labels and are shown by the API. Keys and values follow Kubernetes' rules, so one
//! flow runs the same on Docker and on Kubernetes.

use std::collections::BTreeMap;

use super::Scalar;

/// Labels as written: `key: value`.
pub type Labels = BTreeMap<String, Scalar>;

/// The prefix of the labels the engine sets itself; a flow may not set them.
pub const RESERVED_PREFIX: &str = "io.containerops.";

/// Why a label is not allowed, if it is not.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "label {key:?}: {RESERVED_PREFIX}* labels are set by the engine"
        ));
    }
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns = p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !dns {
            return Err(format!(
                "label {key:?}: the prefix must be a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
    }
    if name.is_empty() || !label_text(name) {
        return Err(format!(
            "label {key:?}: the name must be 1-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ));
    }
    if !value.is_empty() && !label_text(value) {
        return Err(format!(
            "label {key:?}: the value {value:?} must be at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Kubernetes' label name and value syntax.
fn label_text(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Merges label maps from low to high precedence (flow, stage, job).
pub fn merge<'a>(levels: impl IntoIterator<Item = &'a Labels>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for level in levels {
        for (k, v) in level {
            out.insert(k.clone(), v.0.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_label_rules() {
        assert_eq!(check_label("team", "payments"), Ok(()));
        assert_eq!(check_label("example.com/tier", "web-1.2"), Ok(()));
        assert_eq!(check_label("empty", ""), Ok(()));
        assert!(check_label("io.containerops.run", "x").is_err());
        assert!(check_label("Bad_Prefix.com/x", "y").is_err());
        assert!(check_label("-x", "y").is_err());
        assert!(check_label("x", "has space").is_err());
        assert!(check_label("x", &"v".repeat(64)).is_err());
        assert!(check_label("", "v").is_err());
    }

    #[test]
    fn later_levels_win() {
        let flow = Labels::from([
            ("a".into(), Scalar("1".into())),
            ("b".into(), Scalar("1".into())),
        ]);
        let job = Labels::from([("b".into(), Scalar("2".into()))]);
        let m = merge([&flow, &job]);
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
    }
}
