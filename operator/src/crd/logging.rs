//! `spec.logging`: how the cache nodes write their log lines (text or JSON) and which
//! ones (a tracing filter). Both reach the pods through the `<name>-config` ConfigMap
//! (`KACHE_LOG_FORMAT`, `RUST_LOG`), so a change rolls the pods like any other setting.

use serde::{Deserialize, Serialize};

/// The cache nodes' logs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// text (the default) for people, or json: one object a line, the fields of the
    /// span it was written in (a request's `request_id`) under `span`.
    /// docs/operations.md, "Logs".
    #[serde(default)]
    pub format: LogFormat,

    /// Which lines, as a tracing filter: a level (error, warn, info, debug, trace) or
    /// directives. Unset: info. `info,kache_node::request=debug` adds a line per request
    /// on the node that took it and on its replicas, each with the request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_:=,.\-]{1,256}$"))]
    pub level: Option<String>,
}

/// A log line format, as `kache-node --log-format` takes it.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The node's own value for it.
    pub fn node_format(self) -> kache_api::logs::LogFormat {
        match self {
            Self::Text => kache_api::logs::LogFormat::Text,
            Self::Json => kache_api::logs::LogFormat::Json,
        }
    }
}
