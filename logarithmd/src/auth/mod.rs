//! Who may call which route. Every route that needs a scope asks for it in one way: the
//! [`Authorized`] extractor (`Authorized<Read>`, `Authorized<Admin>`, `Authorized<Ingest>`
//! as a handler argument, before any body extractor), which calls
//! [`Authenticator::require`]. New routes (the UI, SSE, the Loki API) take the same
//! extractor; nothing else reads the `Authorization` header.
//!
//! - A token is `Authorization: Bearer <secret>`; the configuration holds only the
//!   SHA-256 of each secret ([`token::TokenConfig`]). The presented secret is hashed and
//!   compared with every configured digest in constant time (fixed 32-byte digests, no
//!   early exit on length or on the first match).
//! - No token: anonymous. Anonymous callers may read only with `anonymous_read = true`,
//!   and may ingest only while no token has the `ingest` scope (a warning is logged).
//! - 401 when the token is missing or unknown, 403 when it lacks the scope; both name the
//!   scope the route needs and never the token.
//! - A read token limited to flows reads only those flows' jobs and runs; see
//!   [`Caller::may_read_flow`]. Environment values and `co_data` are for [`Caller::is_admin`].
//!
//! # Layout
//! - [`token`]: the `[[tokens]]` configuration, hashing, `hash-token`.
//! - [`follows`]: concurrent follows per token (429 beyond the cap).

pub mod follows;
pub mod token;

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::api::error::ApiError;
pub use token::{Scope, TokenConfig};

/// A configured token, ready to compare.
#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// Whoever made a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; `None` for an anonymous caller.
    name: Option<Arc<str>>,
    scopes: Vec<Scope>,
    /// The flows a limited read token may see.
    flows: Option<Arc<[String]>>,
}

impl Caller {
    fn anonymous(scope: Scope) -> Caller {
        Caller {
            name: None,
            scopes: vec![scope],
            flows: None,
        }
    }

    /// The token's name (for logs and per-token limits), `anonymous` without one.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("anonymous")
    }

    /// Whether the caller has `scope`; `admin` includes `read`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || (*s == Scope::Admin && scope == Scope::Read))
    }

    /// Environment values, `co_data` and flow sources are shown only to admins.
    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// The flows a limited token may read; `None` when it may read all.
    pub fn flows(&self) -> Option<&[String]> {
        if self.is_admin() {
            return None;
        }
        self.flows.as_deref()
    }

    /// The `flow` filter a listing uses: the one asked for, if the caller may read it;
    /// for a token limited to one flow and no filter asked, that flow. A limited token
    /// with several flows must name one (403 otherwise, naming the choices).
    pub fn flow_filter(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        let Some(allowed) = self.flows() else {
            return Ok(requested);
        };
        match requested {
            Some(f) if allowed.contains(&f) => Ok(Some(f)),
            Some(f) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token given may not read flow {f:?}"),
            )),
            None if allowed.len() == 1 => Ok(allowed.first().cloned()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the token given reads only some flows: add flow=<one of {}>",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// Whether the caller may read a job or run of `flow` (`None`: a job of no flow).
    pub fn may_read_flow(&self, flow: Option<&str>) -> bool {
        match (self.flows(), flow) {
            (None, _) => true,
            (Some(allowed), Some(f)) => allowed.iter().any(|a| a == f),
            (Some(_), None) => false,
        }
    }
}

/// Turns a request's bearer token into a [`Caller`], or the 401/403 answer.
#[derive(Debug)]
pub struct Authenticator {
    entries: Vec<Entry>,
    anonymous_read: bool,
    ingest_open: bool,
}

impl Authenticator {
    /// From validated token entries (see [`TokenConfig::validate`]).
    pub fn new(tokens: &[TokenConfig], anonymous_read: bool) -> Result<Authenticator, String> {
        let mut entries = Vec::with_capacity(tokens.len());
        for t in tokens {
            t.validate()?;
            entries.push(Entry {
                digest: t.digest()?,
                caller: Caller {
                    name: Some(Arc::from(t.name.as_str())),
                    scopes: t.scopes.clone(),
                    flows: t.flows.clone().map(Arc::from),
                },
            });
        }
        let ingest_open = !tokens.iter().any(|t| t.scopes.contains(&Scope::Ingest));
        Ok(Authenticator {
            entries,
            anonymous_read,
            ingest_open,
        })
    }

    /// Whether anyone may ingest (no token has the `ingest` scope).
    pub fn ingest_open(&self) -> bool {
        self.ingest_open
    }

    /// Whether callers without a token may read.
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// The caller if it may do what `scope` allows; 401 or 403 naming `scope` otherwise.
    pub fn require(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        let presented = match presented_token(headers) {
            Presented::None => None,
            Presented::Malformed => {
                return Err(unauthorized(
                    scope,
                    "the Authorization header is not `Bearer <token>`",
                ))
            }
            Presented::Token(t) => Some(t),
        };
        let Some(secret) = presented else {
            let open = match scope {
                Scope::Read => self.anonymous_read,
                Scope::Ingest => self.ingest_open,
                Scope::Admin => false,
            };
            return if open {
                Ok(Caller::anonymous(scope))
            } else {
                Err(unauthorized(scope, "no bearer token was given"))
            };
        };
        let Some(caller) = self.find(secret.as_bytes()) else {
            return Err(unauthorized(scope, "the bearer token is not valid"));
        };
        if caller.has(scope) {
            Ok(caller.clone())
        } else {
            tracing::info!(token = caller.name(), needed = %scope, "token lacks a scope");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this route needs a token with scope `{scope}`, and the token given lacks it"
                ),
            ))
        }
    }

    /// The entry whose digest equals the presented secret's. Every entry is compared, in
    /// constant time, and the index is chosen without branching on the comparisons.
    fn find(&self, presented: &[u8]) -> Option<&Caller> {
        let digest = token::digest_of(presented);
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u64;
        for (i, e) in self.entries.iter().enumerate() {
            let hit = e.digest.ct_eq(&digest);
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if bool::from(found) {
            self.entries.get(index as usize).map(|e| &e.caller)
        } else {
            None
        }
    }
}

fn unauthorized(scope: Scope, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{why}; this route needs a token with scope `{scope}`"),
    )
}

enum Presented<'a> {
    None,
    Malformed,
    Token(&'a str),
}

/// The token of `Authorization: Bearer <token>`. The only place that reads the header.
fn presented_token(headers: &HeaderMap) -> Presented<'_> {
    let Some(v) = headers.get(protocol::AUTH_HEADER) else {
        return Presented::None;
    };
    match v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    {
        Some(t) if !t.is_empty() => Presented::Token(t),
        _ => Presented::Malformed,
    }
}

/// Marks the scope an [`Authorized`] extractor requires.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// Scope `read`: jobs, logs, flows, runs, the UI.
pub struct Read;
/// Scope `admin`: changing flows and runs, webhook management, secrets in answers.
pub struct Admin;
/// Scope `ingest`: agents.
pub struct Ingest;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}
impl RequiredScope for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}

/// The extractor a handler takes to require a scope: `auth: Authorized<Read>` answers
/// 401/403 before the handler runs, and hands the [`Caller`] to it otherwise.
pub struct Authorized<S: RequiredScope> {
    pub caller: Caller,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope, St> FromRequestParts<St> for Authorized<S>
where
    Arc<Authenticator>: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let caller = auth.require(&parts.headers, S::SCOPE)?;
        Ok(Authorized {
            caller,
            _scope: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert("authorization", HeaderValue::from_str(t).unwrap());
        }
        h
    }

    fn auth(anonymous_read: bool) -> Authenticator {
        let mut limited = TokenConfig::from_secret("ci", "limited-secret", &[Scope::Read]);
        limited.flows = Some(vec!["build".into()]);
        Authenticator::new(
            &[
                TokenConfig::from_secret("agents", "ingest-secret", &[Scope::Ingest]),
                TokenConfig::from_secret("ops", "admin-secret", &[Scope::Admin]),
                limited,
            ],
            anonymous_read,
        )
        .unwrap()
    }

    #[test]
    fn scopes_decide_401_and_403_naming_the_scope() {
        let a = auth(false);
        let e = a.require(&headers(None), Scope::Read).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = a
            .require(&headers(Some("Bearer nope")), Scope::Admin)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = a
            .require(&headers(Some("Bearer ingest-secret")), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let e = a
            .require(&headers(Some("Basic abc")), Scope::Read)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let c = a
            .require(&headers(Some("Bearer admin-secret")), Scope::Read)
            .unwrap();
        assert_eq!(c.name(), "ops");
        assert!(c.is_admin() && c.may_read_flow(None));
        let c = a
            .require(&headers(Some("Bearer limited-secret")), Scope::Read)
            .unwrap();
        assert_eq!(c.name(), "ci");
        assert!(c.may_read_flow(Some("build")));
        assert!(!c.may_read_flow(Some("deploy")) && !c.may_read_flow(None));
        // Ingest is closed once a token has the scope.
        assert!(a.require(&headers(None), Scope::Ingest).is_err());
    }

    #[test]
    fn anonymous_read_is_explicit() {
        let a = auth(true);
        let c = a.require(&headers(None), Scope::Read).unwrap();
        assert_eq!(c.name(), "anonymous");
        assert!(!c.is_admin());
        assert!(a.require(&headers(None), Scope::Admin).is_err());
        // A wrong token is refused even where anonymous reading is allowed.
        assert!(a.require(&headers(Some("Bearer x")), Scope::Read).is_err());
        let open = Authenticator::new(&[], false).unwrap();
        assert!(open.ingest_open());
        assert!(open.require(&headers(None), Scope::Ingest).is_ok());
    }
}
