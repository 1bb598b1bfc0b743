//! Client authentication and authorization: the tokens `--auth-dir` holds, the role each
//! one grants, and the count of what was refused. HTTP (`http::auth`) and RESP
//! (`resp::commands`) decide what each request needs and ask [`Auth`] who presented a
//! token.
//!
//! Layout:
//! - [`table`]: the token table, read from the directory, and its constant-time lookup.
//!
//! Roles are ordered: `read` < `readwrite` < `admin`; a role allows what every lower one
//! does. With `--auth-dir` unset [`Auth`] is off: everything is allowed, and checking
//! that costs one branch (no lock, no allocation). With it set, auth is on even while the
//! directory holds no token (then only the open endpoints answer).
//!
//! The table is read again every [`RELOAD_EVERY`] and swapped in whole when it changed;
//! a read that fails keeps the table in force and is logged (paths and user names only,
//! never a token). Each swap bumps a generation, which lets a RESP connection, which
//! authenticates once, notice that its token may have been revoked.

pub mod table;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

pub use table::{Digest, TokenTable, digest};

/// How often `--auth-dir` is read again: a rotated token is accepted, and a removed
/// one refused, at most this long (plus the kubelet's Secret sync) after the change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// What a token allows, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read keys, placement and stats.
    Read,
    /// And write and delete keys.
    ReadWrite,
    /// And anything that flushes data or changes configuration.
    Admin,
}

impl Role {
    /// The role a directory under `--auth-dir` names.
    pub fn from_dir(name: &str) -> Option<Self> {
        match name {
            "read" => Some(Self::Read),
            "readwrite" => Some(Self::ReadWrite),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ReadWrite => "readwrite",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a request needs, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: it reveals no key or value (health, readiness, metrics, the cluster view,
    /// the API description; RESP's connection handshake).
    Open,
    /// A token with at least this role.
    Needs(Role),
}

/// Who presented a known token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: Arc<str>,
    pub role: Role,
}

/// A token that was accepted: who, and what to check it against after a reload. Debug
/// shows neither digest nor token.
#[derive(Clone)]
pub struct Credential {
    pub principal: Principal,
    digest: Digest,
    /// The table generation it was last checked against.
    generation: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Which listener refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http = 0,
    Resp = 1,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one no user has (HTTP 401; RESP NOAUTH or WRONGPASS).
    Unauthenticated = 0,
    /// A known token whose role is too low (HTTP 403; RESP NOPERM).
    Forbidden = 1,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read --auth-dir {dir}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The node's authentication: off, or the token table in force. A cheap `Clone` handle.
#[derive(Debug, Clone, Default)]
pub struct Auth(Option<Arc<Shared>>);

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// The table in force. A read lock is held only for one lookup (no `.await` under
    /// it), and the reloader takes the write lock only to swap a table it built outside
    /// it, so a lookup waits at most for a pointer swap.
    table: RwLock<TokenTable>,
    /// Bumped at every swap (under the write lock).
    generation: AtomicU64,
    /// By protocol, then reason.
    refused: [[AtomicU64; 2]; 2],
    reload_failures: AtomicU64,
}

impl Auth {
    /// No authentication: every request is allowed.
    pub fn off() -> Self {
        Self(None)
    }

    /// Authentication with the tokens in `dir`. A directory that cannot be read at start
    /// is an error: a node that refused everything over a mistyped path would look alive.
    pub fn load(dir: PathBuf) -> Result<Self, AuthError> {
        let loaded = TokenTable::read(&dir).map_err(|source| AuthError::Read {
            dir: dir.clone(),
            source,
        })?;
        for note in &loaded.notes {
            tracing::warn!(dir = %dir.display(), "{note}");
        }
        log_table(&dir, &loaded.table);
        Ok(Self::with_table(dir, loaded.table))
    }

    /// Authentication with `table`, read from `dir` from now on.
    pub fn with_table(dir: PathBuf, table: TokenTable) -> Self {
        Self(Some(Arc::new(Shared {
            dir,
            table: RwLock::new(table),
            generation: AtomicU64::new(0),
            refused: Default::default(),
            reload_failures: AtomicU64::new(0),
        })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The user whose token is `token` (and whose name is `user`, when given). `None`
    /// when auth is off, too: callers check [`Auth::is_on`] first.
    pub fn authenticate(&self, user: Option<&[u8]>, token: &[u8]) -> Option<Credential> {
        let shared = self.0.as_ref()?;
        let digest = digest(token);
        let table = shared.table.read();
        let entry = table.lookup(user, &digest)?;
        Some(Credential {
            principal: Principal {
                user: entry.user.clone(),
                role: entry.role,
            },
            digest,
            generation: shared.generation.load(Ordering::Acquire),
        })
    }

    /// `credential` as the table in force has it: unchanged if no reload happened since
    /// it was checked; its user's current role after one; `None` once its token (with
    /// that user name) is gone.
    pub fn recheck(&self, credential: &mut Credential) -> bool {
        let Some(shared) = &self.0 else {
            return true;
        };
        let generation = shared.generation.load(Ordering::Acquire);
        if generation == credential.generation {
            return true;
        }
        let table = shared.table.read();
        let Some(entry) = table.lookup(
            Some(credential.principal.user.as_bytes()),
            &credential.digest,
        ) else {
            return false;
        };
        credential.principal.role = entry.role;
        credential.generation = generation;
        true
    }

    pub fn count_refused(&self, protocol: Protocol, refusal: Refusal) {
        if let Some(shared) = &self.0 {
            shared.refused[protocol as usize][refusal as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals so far, by protocol and reason (zero when off).
    pub fn refused(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        [(Protocol::Http, "http"), (Protocol::Resp, "resp")]
            .into_iter()
            .flat_map(|protocol| {
                [
                    (Refusal::Unauthenticated, "unauthenticated"),
                    (Refusal::Forbidden, "forbidden"),
                ]
                .into_iter()
                .map(move |reason| (protocol, reason))
            })
            .map(|((protocol, protocol_name), (reason, reason_name))| {
                let count = self.0.as_ref().map_or(0, |shared| {
                    shared.refused[protocol as usize][reason as usize].load(Ordering::Relaxed)
                });
                (protocol_name, reason_name, count)
            })
    }

    /// Users in the table in force (zero when off).
    pub fn users(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |shared| shared.table.read().len() as u64)
    }

    /// Reads of `--auth-dir` that failed after the start (the previous table stayed).
    pub fn reload_failures(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |shared| shared.reload_failures.load(Ordering::Relaxed))
    }

    /// Reads the directory again every [`RELOAD_EVERY`] until aborted; `None` when off.
    pub fn spawn_reloader(&self) -> Option<tokio::task::JoinHandle<()>> {
        let shared = self.0.clone()?;
        Some(tokio::spawn(async move {
            let mut failing = false;
            let mut ticks = tokio::time::interval(RELOAD_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let dir = shared.dir.clone();
                let read = tokio::task::spawn_blocking(move || TokenTable::read(&dir)).await;
                match read {
                    Ok(Ok(loaded)) => {
                        if failing {
                            tracing::info!(dir = %shared.dir.display(), "--auth-dir is readable again");
                            failing = false;
                        }
                        shared.swap_if_changed(loaded);
                    }
                    Ok(Err(err)) => {
                        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                        // Logged when it starts failing, not every 5 s while it does.
                        if !failing {
                            tracing::error!(
                                dir = %shared.dir.display(),
                                error = %err,
                                "cannot read --auth-dir; keeping the tokens read before"
                            );
                            failing = true;
                        }
                    }
                    Err(join) => {
                        shared.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %join, "reading --auth-dir stopped");
                    }
                }
            }
        }))
    }
}

impl Shared {
    fn swap_if_changed(&self, loaded: table::Loaded) {
        if *self.table.read() == loaded.table {
            return;
        }
        for note in &loaded.notes {
            tracing::warn!(dir = %self.dir.display(), "{note}");
        }
        log_table(&self.dir, &loaded.table);
        let mut table = self.table.write();
        *table = loaded.table;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

fn log_table(dir: &std::path::Path, table: &TokenTable) {
    let (read, readwrite, admin) = table.counts();
    if table.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            "client authentication is on and --auth-dir holds no token: only the open \
             endpoints answer"
        );
    } else {
        tracing::info!(dir = %dir.display(), read, readwrite, admin, "client tokens loaded");
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &std::path::Path, path: &str, content: &str) {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    #[test]
    fn roles_are_ordered_and_named_as_their_directories() {
        assert!(Role::Read < Role::ReadWrite && Role::ReadWrite < Role::Admin);
        for role in [Role::Read, Role::ReadWrite, Role::Admin] {
            assert_eq!(Role::from_dir(role.name()), Some(role));
        }
        assert_eq!(Role::from_dir("Admin"), None);
    }

    #[test]
    fn off_authenticates_nobody_and_counts_nothing() {
        let auth = Auth::off();
        assert!(!auth.is_on());
        assert!(auth.authenticate(None, b"anything").is_none());
        auth.count_refused(Protocol::Http, Refusal::Forbidden);
        assert!(auth.refused().all(|(_, _, count)| count == 0));
        assert!(auth.spawn_reloader().is_none());
    }

    #[test]
    fn a_credential_follows_reloads_and_is_dropped_when_its_token_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "read/s/app", "first");
        let auth = Auth::load(dir.path().to_owned()).expect("load");
        let mut credential = auth.authenticate(Some(b"app"), b"first").expect("known");
        assert_eq!(credential.principal.role, Role::Read);
        assert!(format!("{credential:?}").contains("app"));

        // The same token moves to readwrite: the connection's role follows.
        fs::remove_dir_all(dir.path().join("read")).expect("rm");
        write(dir.path(), "readwrite/s/app", "first");
        let shared = auth.0.as_ref().expect("on");
        shared.swap_if_changed(TokenTable::read(dir.path()).expect("read"));
        assert!(auth.recheck(&mut credential));
        assert_eq!(credential.principal.role, Role::ReadWrite);

        // Rotated: the old token is refused, to new logins and to the connection.
        write(dir.path(), "readwrite/s/app", "second");
        shared.swap_if_changed(TokenTable::read(dir.path()).expect("read"));
        assert!(!auth.recheck(&mut credential));
        assert!(auth.authenticate(None, b"first").is_none());
        assert!(auth.authenticate(None, b"second").is_some());
    }

    #[test]
    fn refusals_are_counted_by_protocol_and_reason() {
        let auth = Auth::with_table(PathBuf::new(), TokenTable::default());
        auth.count_refused(Protocol::Http, Refusal::Unauthenticated);
        auth.count_refused(Protocol::Http, Refusal::Unauthenticated);
        auth.count_refused(Protocol::Resp, Refusal::Forbidden);
        let counts: Vec<_> = auth.refused().collect();
        assert_eq!(
            counts,
            [
                ("http", "unauthenticated", 2),
                ("http", "forbidden", 0),
                ("resp", "unauthenticated", 0),
                ("resp", "forbidden", 1),
            ]
        );
    }
}
