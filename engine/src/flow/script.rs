//! `pre:` and `post:` of a job: a Lua script written in the flow file, or a file sent with
//! it (`file: scripts/check.lua`, a path relative to the flow file). A file's text is read
//! when the flow is registered and kept with the flow, so a run never depends on files
//! changing later. `crate::script` runs them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest script text (embedded or read from a file).
pub const SCRIPT_MAX: usize = 256 * 1024;

/// A pre or post script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The file it came from, relative to the flow file (`None`: written in the flow).
    pub file: Option<String>,
    /// The Lua text (for a file: empty until the flow's files are attached).
    pub source: String,
}

impl Serialize for Script {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.file {
            None => s.serialize_str(&self.source),
            Some(f) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("file", f)?;
                m.serialize_entry("source", &self.source)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Script, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Script;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("Lua source text, or {file: <path relative to the flow file>}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Script, E> {
                Ok(Script {
                    file: None,
                    source: v.to_owned(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Script, A::Error> {
                let mut file = None;
                let mut source = String::new();
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "file" => file = Some(map.next_value::<String>()?),
                        // Written by the engine when it stores a flow with its files.
                        "source" => source = map.next_value::<String>()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["file"]));
                        }
                    }
                }
                let file = file.ok_or_else(|| de::Error::missing_field("file"))?;
                Ok(Script {
                    file: Some(file),
                    source,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether `path` is a relative path that stays below the flow file's directory.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != ".." && part != ".")
}

/// Puts the text of each script file into its script. `files` maps paths relative to the
/// flow file to their text. Returns the problem with the first script whose file is
/// missing or not allowed.
pub fn attach(script: &mut Script, files: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(path) = &script.file else {
        return Ok(());
    };
    if !valid_path(path) {
        return Err(format!(
            "script file {path:?} must be a relative path below the flow file's directory"
        ));
    }
    match files.get(path) {
        Some(text) => {
            script.source = text.clone();
            Ok(())
        }
        // Stored flows carry the text already.
        None if !script.source.is_empty() => Ok(()),
        None => Err(format!(
            "script file {path:?} was not sent with the flow (register it with its files)"
        )),
    }
}
