//! The error type each crate of the workspace defines: a kind callers branch on, a message
//! for humans, and the underlying cause. Each crate keeps its own type and its own kinds;
//! [`crate_error!`](crate::crate_error) writes the part they share.

/// Defines `pub struct Error` in the calling module over its `ErrorKind` (a `Copy + Debug +
/// Display` enum): a kind, a message and an optional source, shown as
/// `{prefix}{kind}: {message}`, with `new`, `with_source`, `kind` and `message`.
/// Attributes before the prefix (the type's doc) go on the struct. The calling crate
/// depends on `thiserror`, as every library of the workspace does.
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// pub enum ErrorKind {
///     Invalid,
/// }
///
/// impl std::fmt::Display for ErrorKind {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("invalid")
///     }
/// }
///
/// protocol::crate_error!(
///     /// A failure of this crate.
///     "demo "
/// );
///
/// let e = Error::with_source(ErrorKind::Invalid, "bad input", std::fmt::Error);
/// assert_eq!(e.to_string(), "demo invalid: bad input");
/// assert_eq!(e.kind(), ErrorKind::Invalid);
/// assert_eq!(e.message(), "bad input");
/// assert!(std::error::Error::source(&e).is_some());
/// ```
#[macro_export]
macro_rules! crate_error {
    ($(#[$meta:meta])* $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        #[error("{}{kind}: {message}", $prefix)]
        pub struct Error {
            kind: ErrorKind,
            message: String,
            #[source]
            source: Option<Box<dyn std::error::Error + Send + Sync>>,
        }

        impl Error {
            pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
                Error {
                    kind,
                    message: message.into(),
                    source: None,
                }
            }

            pub fn with_source(
                kind: ErrorKind,
                message: impl Into<String>,
                source: impl std::error::Error + Send + Sync + 'static,
            ) -> Error {
                Error {
                    kind,
                    message: message.into(),
                    source: Some(Box::new(source)),
                }
            }

            pub fn kind(&self) -> ErrorKind {
                self.kind
            }

            /// The message without the kind prefix (what an API answers with).
            pub fn message(&self) -> &str {
                &self.message
            }
        }
    };
}
