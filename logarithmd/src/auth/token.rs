//! Configured API tokens: a name, the SHA-256 of the secret (never the secret itself),
//! scopes and, for read tokens, an optional list of flows. `logarithmd hash-token` prints
//! the `[[tokens]]` entry for a secret.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may do. `admin` includes `read`; `ingest` is separate from both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/v1/ingest` (agents).
    Ingest,
    /// Jobs, logs, flows, runs (without environment values or `co_data`).
    Read,
    /// Everything `read` may, plus flow environment values and `co_data`, changing flows
    /// and runs, and webhook management.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[tokens]]` entry of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token (logs and metrics use it; answers never show it).
    pub name: String,
    /// `sha256:<64 hex digits>`: the SHA-256 of the secret the client sends as
    /// `Authorization: Bearer <secret>`. `logarithmd hash-token` prints it.
    pub hash: String,
    /// What the token may do: any of `ingest`, `read`, `admin`.
    pub scopes: Vec<Scope>,
    /// Limits a `read` token to the jobs and runs of these flows. Absent: every flow, and
    /// jobs that belong to no flow.
    #[serde(default)]
    pub flows: Option<Vec<String>>,
}

impl TokenConfig {
    /// An entry for a secret known in plaintext (flags, environment, tests).
    pub fn from_secret(name: &str, secret: &str, scopes: &[Scope]) -> TokenConfig {
        TokenConfig {
            name: name.to_owned(),
            hash: hash_secret(secret),
            scopes: scopes.to_vec(),
            flows: None,
        }
    }

    /// The digest in `hash`, or why it is not one.
    pub fn digest(&self) -> Result<[u8; 32], String> {
        parse_hash(&self.hash).ok_or_else(|| {
            format!(
                "token {:?}: hash must be \"sha256:\" and 64 hex digits (see `logarithmd hash-token`)",
                self.name
            )
        })
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("every token needs a name".into());
        }
        self.digest()?;
        if self.scopes.is_empty() {
            return Err(format!("token {:?} has no scopes", self.name));
        }
        if let Some(flows) = &self.flows {
            if flows.is_empty() || flows.iter().any(|f| f.is_empty()) {
                return Err(format!(
                    "token {:?}: flows must name at least one flow (omit it for all)",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// `sha256:<hex>` of a secret.
pub fn hash_secret(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// The SHA-256 of what a client presented.
pub fn digest_of(presented: &[u8]) -> [u8; 32] {
    Sha256::digest(presented).into()
}

fn parse_hash(h: &str) -> Option<[u8; 32]> {
    let hex_part = h.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// A new random secret: 32 bytes from the OS generator, as 64 hex digits.
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_and_rejects_malformed() {
        let t = TokenConfig::from_secret("a", "s3cret", &[Scope::Read]);
        assert_eq!(
            t.hash,
            "sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
        assert_eq!(t.digest().unwrap(), digest_of(b"s3cret"));
        for bad in ["", "sha256:", "sha256:zz", "md5:00", "sha256:00ff"] {
            let t = TokenConfig {
                hash: bad.into(),
                ..t.clone()
            };
            assert!(t.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validate_refuses_empty_scopes_and_flows() {
        let mut t = TokenConfig::from_secret("a", "x", &[]);
        assert_eq!(t.validate().unwrap_err(), "token \"a\" has no scopes");
        t.scopes = vec![Scope::Read];
        t.flows = Some(vec![]);
        assert!(t.validate().unwrap_err().contains("at least one flow"));
        t.flows = Some(vec!["build".into()]);
        assert_eq!(t.validate(), Ok(()));
    }
}
