//! Flow secrets: the values a flow's `secrets:` name (`from_secret`), kept by logarithmd in
//! `[engine.secrets]` and never in a flow file. [`super::runner::LabelledRunner`] puts
//! them into a job container's environment just before it starts (so no stored run ever
//! holds them); ingest masks them in the job's lines ([`crate::masking::run_masks`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::masking::MIN_SECRET_LEN;

/// Where one secret's value comes from: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The name of one of logarithmd's environment variables.
    #[serde(default)]
    pub env: Option<String>,
    /// A file holding the value (one trailing newline is dropped).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The value itself (prefer `env` or `file`, which keep it out of the configuration).
    #[serde(default)]
    pub value: Option<String>,
}

impl SecretSource {
    fn read(&self, name: &str) -> Result<String, String> {
        let v = match (&self.env, &self.file, &self.value) {
            (Some(var), None, None) => std::env::var(var)
                .map_err(|_| format!("engine.secrets.{name}: ${var} is not set"))?,
            (None, Some(path), None) => {
                let mut v = std::fs::read_to_string(path)
                    .map_err(|e| format!("engine.secrets.{name}: {}: {e}", path.display()))?;
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                v
            }
            (None, None, Some(v)) => v.clone(),
            _ => {
                return Err(format!(
                    "engine.secrets.{name}: give exactly one of env, file or value"
                ))
            }
        };
        if v.len() < MIN_SECRET_LEN {
            return Err(format!(
                "engine.secrets.{name}: the value is shorter than {MIN_SECRET_LEN} bytes, too short to be masked in logs"
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "engine.secrets.{name}: the value holds a NUL byte, which no environment variable can"
            ));
        }
        Ok(v)
    }
}

/// The values of `[engine.secrets]`, read once at start. Its `Debug` shows names only.
#[derive(Clone, Default)]
pub struct FlowSecrets(BTreeMap<String, String>);

impl std::fmt::Debug for FlowSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl FlowSecrets {
    /// Reads every source; the first problem is the error.
    pub fn read(sources: &BTreeMap<String, SecretSource>) -> Result<FlowSecrets, String> {
        let mut out = BTreeMap::new();
        for (name, source) in sources {
            out.insert(name.clone(), source.read(name)?);
        }
        Ok(FlowSecrets(out))
    }

    /// Values given directly (tests).
    pub fn from_values<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>) -> FlowSecrets {
        FlowSecrets(
            values
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sources_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let sources = BTreeMap::from([
            (
                "f".to_owned(),
                SecretSource {
                    file: Some(file),
                    ..SecretSource::default()
                },
            ),
            (
                "v".to_owned(),
                SecretSource {
                    value: Some("literal-value".into()),
                    ..SecretSource::default()
                },
            ),
        ]);
        let s = FlowSecrets::read(&sources).unwrap();
        assert_eq!(s.get("f"), Some("from-a-file"));
        assert_eq!(s.get("v"), Some("literal-value"));
        assert!(!format!("{s:?}").contains("literal-value"));
        let short = BTreeMap::from([(
            "x".to_owned(),
            SecretSource {
                value: Some("abc".into()),
                ..SecretSource::default()
            },
        )]);
        assert!(FlowSecrets::read(&short)
            .unwrap_err()
            .contains("shorter than 4"));
        let both = BTreeMap::from([(
            "x".to_owned(),
            SecretSource {
                value: Some("abcd".into()),
                env: Some("HOME".into()),
                ..SecretSource::default()
            },
        )]);
        assert!(FlowSecrets::read(&both)
            .unwrap_err()
            .contains("exactly one"));
    }
}
