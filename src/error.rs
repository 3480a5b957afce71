//! One error type for the whole library: a kind that says what happened, and a
//! message that says where. `anyhow` is used only at the CLI edge.

use std::fmt;

/// What went wrong, in a form a caller can match on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller gave something malformed: a bad spec string, a malformed
    /// safetensors header, a shape that does not match its bytes.
    InvalidInput,
    /// Bytes that were written by us (an archive, a stream) are damaged.
    Corruption,
    /// The input ends before the data it promises.
    Truncated,
    /// Well-formed but not supported: a newer format version, an unknown codec id,
    /// a dtype a codec cannot handle.
    Unsupported,
    /// An operating-system I/O error (file missing, disk full, permission).
    Io,
    /// A lossy codec failed to keep its declared error bound.
    BoundViolated,
    /// A checksum or hash did not match.
    HashMismatch,
    /// A download failed (hub or mirror unreachable, HTTP error).
    Network,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "i/o error",
            ErrorKind::BoundViolated => "error bound violated",
            ErrorKind::HashMismatch => "hash mismatch",
            ErrorKind::Network => "network",
        }
    }
}

/// The library's error: a kind plus a message with the context (file, tensor,
/// offset) needed to act on it.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corruption, message)
    }
    pub fn truncated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Truncated, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn hash_mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::HashMismatch, message)
    }
    pub fn bound_violated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BoundViolated, message)
    }
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Network, message)
    }
    /// An I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let message = format!("{}: {err}", context.into());
        Error { kind: ErrorKind::Io, message, source: Some(Box::new(err)) }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The operating system's error behind an I/O error.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.source.as_deref().and_then(|e| e.downcast_ref::<std::io::Error>())
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefix the message with where it happened ("tensor 'x', chunk 3: ...").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

/// `source()` is not given: the message already holds the cause's text
/// (an I/O error's "No space left on device (os error 28)"), and error
/// reporters that walk the chain (anyhow's `{:#}`) printed it twice. The
/// cause stays reachable through [`Error::io_error`].
impl std::error::Error for Error {}

/// Add context to any `Result<T, Error>`.
pub trait ResultExt<T> {
    fn context(self, context: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}
