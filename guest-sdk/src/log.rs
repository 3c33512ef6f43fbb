//! Logging to the host's log, tagged with the stage and plugin that wrote it.
//!
//! Use the macros: `info!("skipped {n} records")`. Under [`crate::testing::Harness`] the lines
//! are kept for the test to inspect and also printed to stderr.

/// How loud a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[doc(hidden)]
pub fn __log(level: Level, message: std::fmt::Arguments<'_>) {
    crate::__rt::log(level, &message.to_string());
}

/// Log at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::__log($crate::log::Level::Debug, ::std::format_args!($($arg)*)) };
}

/// Log at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::__log($crate::log::Level::Info, ::std::format_args!($($arg)*)) };
}

/// Log at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::__log($crate::log::Level::Warn, ::std::format_args!($($arg)*)) };
}

/// Log at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::__log($crate::log::Level::Error, ::std::format_args!($($arg)*)) };
}
