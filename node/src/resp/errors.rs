//! The RESP error replies: Redis's codes and wording where a Redis client or person would
//! recognise them, kache's explanation after the code.
//!
//! - `ERR …`: bad input (wrong arity, syntax, not an integer, over a limit). Nothing changed.
//! - `OOM …`: the write does not fit under `--max-memory` (HTTP's 507). Nothing changed.
//! - `MISCONF …`: the data dir refuses writes (a full disk; HTTP's 507), as Redis answers
//!   when it cannot write its AOF. Nothing changed; reads go on.
//! - `NOAUTH …`, `WRONGPASS …`, `NOPERM …`: not authenticated, a wrong token, too low a
//!   role (with `--auth-dir`), worded as Redis 7.2 words them. Nothing changed.
//! - `TRYAGAIN …`: too few replicas answered, or this node cannot take writes now (HTTP's
//!   503). Redis Cluster clients retry it by themselves. A write answered `TRYAGAIN` has an
//!   unknown outcome: some replicas may have stored it, and the message says so.

use crate::cluster::ClusterError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// `-ERR <message>`.
    #[error("ERR {0}")]
    Err(String),
    /// `-OOM <message>`.
    #[error("OOM {0}")]
    OutOfMemory(String),
    /// `-TRYAGAIN <message>`.
    #[error("TRYAGAIN {0}")]
    TryAgain(String),
    /// A reply line with its own code (`NOPROTO …`, `NOAUTH …`).
    #[error("{0}")]
    Coded(String),
}

pub type RespResult = Result<(), RespError>;

/// A command before the connection authenticated.
pub fn no_auth() -> RespError {
    RespError::Coded("NOAUTH Authentication required.".into())
}

/// AUTH or HELLO … AUTH with a token (and user) no user has.
pub fn wrong_pass() -> RespError {
    RespError::Coded("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// HELLO without AUTH before the connection authenticated.
pub fn hello_no_auth() -> RespError {
    RespError::Coded(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
         the RESP protocol version at the same time"
            .into(),
    )
}

/// A command (`name`, `command|subcommand` for a subcommand) above `user`'s role.
pub fn no_perm(user: &str, name: &str) -> RespError {
    RespError::Coded(format!(
        "NOPERM User {user} has no permissions to run the '{name}' command"
    ))
}

impl RespError {
    pub fn syntax() -> Self {
        Self::Err("syntax error".into())
    }

    pub fn not_integer() -> Self {
        Self::Err("value is not an integer or out of range".into())
    }

    pub fn arity(command: &str) -> Self {
        Self::Err(format!(
            "wrong number of arguments for '{}' command",
            command.to_ascii_lowercase()
        ))
    }

    /// No password is configured: Redis's answer to `AUTH <password>` then.
    pub fn no_password() -> Self {
        Self::Err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
        )
    }

    /// A read that failed: nothing was changed.
    pub fn read(err: ClusterError) -> Self {
        Self::from_cluster(err, "")
    }

    /// A write that failed; one that reached too few replicas may still surface.
    pub fn write(err: ClusterError) -> Self {
        let unknown = match &err {
            ClusterError::Unavailable { .. } => {
                "; the write may still have been stored by some replicas (unknown outcome)"
            }
            _ => "; nothing was written",
        };
        Self::from_cluster(err, unknown)
    }

    fn from_cluster(err: ClusterError, outcome: &str) -> Self {
        match err {
            ClusterError::Store(
                store @ (StoreError::EntryTooLarge { .. } | StoreError::OutOfMemory { .. }),
            ) => Self::OutOfMemory(store.to_string()),
            ClusterError::Store(StoreError::Disk(message)) => {
                Self::Coded(format!("MISCONF {message}"))
            }
            ClusterError::Store(store) => Self::Err(store.to_string()),
            err @ (ClusterError::Unavailable { .. }
            | ClusterError::Superseded { .. }
            | ClusterError::Behind { .. }
            | ClusterError::ClockOutOfBounds { .. }) => Self::TryAgain(format!("{err}{outcome}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_errors_map_to_redis_codes_and_say_whether_a_write_may_have_landed() {
        let unavailable = || ClusterError::Unavailable {
            needed: 2,
            acked: 1,
            detail: "node-2: connection refused".into(),
        };
        let read = RespError::read(unavailable()).to_string();
        assert!(read.starts_with("TRYAGAIN 1 of the 2 replicas"), "{read}");
        assert!(!read.contains("outcome"), "{read}");
        let write = RespError::write(unavailable()).to_string();
        assert!(write.ends_with("(unknown outcome)"), "{write}");
        let full = RespError::write(ClusterError::Store(StoreError::EntryTooLarge {
            needed: 10,
            max_memory: 5,
        }));
        assert!(
            full.to_string().starts_with("OOM entry needs 10 bytes"),
            "{full}"
        );
        assert_eq!(
            RespError::arity("GET").to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
    }
}
