//! The log line formats: what `--log-format` (`KACHE_LOG_FORMAT`) accepts in the node and
//! the operator, and what the operator writes for `spec.logging.format`.
//!
//! `text` is tracing's human format; `json` is one JSON object per line, with the event's
//! fields at the top level and the current span's fields (the request id among them)
//! under `span`. docs/operations.md, "Logs", shows both.

use std::fmt;
use std::str::FromStr;

/// How a binary writes its log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for people: `<time> <LEVEL> <spans>: <message> <fields>`.
    #[default]
    Text,
    /// One JSON object per line for log pipelines.
    Json,
}

impl LogFormat {
    /// The accepted values, as written on the command line.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not one of [`LogFormat::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format '{0}': expected text or json")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_format_and_nothing_else_does() {
        for name in LogFormat::NAMES {
            let format: LogFormat = name.parse().expect("a listed name");
            assert_eq!(format.as_str(), name);
        }
        assert_eq!(LogFormat::default(), LogFormat::Text);
        for bad in ["JSON", "", "logfmt", "text "] {
            assert_eq!(
                bad.parse::<LogFormat>(),
                Err(UnknownLogFormat(bad.to_owned()))
            );
        }
    }
}
