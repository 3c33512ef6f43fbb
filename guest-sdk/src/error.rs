use std::fmt;

/// Why a plugin could not handle one record. The host reports it with the plugin's name and the
/// record's coordinates, and the pipeline's error policy decides what happens to the record.
///
/// Any `std::error::Error` converts into it, so `?` works on serde, parse and I/O errors.
pub struct Error {
    message: String,
}

/// `Result` with the plugin [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message, as the host will report it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// This error with `context` put in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }
}

// Like anyhow, `Error` itself does not implement `std::error::Error`, so this blanket
// conversion does not collide with `From<Error> for Error`.
impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::msg(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

/// Return early with an [`Error`] built like `format!`.
///
/// ```
/// use weir_sdk::{fail, Result};
///
/// fn check(amount: f64) -> Result<f64> {
///     if amount < 0.0 {
///         fail!("negative amount {amount}");
///     }
///     Ok(amount)
/// }
/// assert_eq!(check(-1.0).unwrap_err().message(), "negative amount -1");
/// ```
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}
