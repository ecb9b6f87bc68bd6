//! The one error type of the value layer.

use std::fmt;

/// Why a value could not be decoded, converted or encoded.
///
/// It carries only a message because every failure here is a client-side
/// mistake (malformed body, wrong argument type) that the runtime reports back
/// verbatim; nobody needs to branch on a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: Box<str>,
}

impl Error {
    /// Creates an error from anything printable, so callers can wrap their own
    /// validation failures in the same type the decoders return.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string().into_boxed_str(),
        }
    }

    /// The human-readable reason, for error bodies and logs.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg)
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg)
    }
}
