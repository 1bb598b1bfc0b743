//! The command table and dispatch: every command kache answers over RESP, with the arity,
//! flags and key positions Redis documents for it.
//!
//! The same table answers `COMMAND` (Redis Cluster clients read the key positions from it
//! to route) and checks each request's arity before it runs. A command that is not in it
//! gets Redis's "unknown command" error. With `--auth-dir`, [`access`] says what each
//! command needs, checked before it runs.

use std::borrow::Cow;

use bytes::Bytes;

use super::errors::{RespError, RespResult};
use super::frame::Reply;
use super::{Flow, Session, cluster, keys, server};
use crate::auth::{Access, Role};

/// One command as `COMMAND` describes it.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    /// Positive: exactly this many arguments (the name included); negative: at least.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub categories: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    categories: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        categories,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const WRITE_FAST: &[&str] = &["write", "fast"];
const CONNECTION: &[&str] = &["noscript", "loading", "stale", "fast"];

/// Every command kache answers, in `COMMAND`'s order.
pub static COMMANDS: &[Spec] = &[
    spec("get", 2, READ, ONE_KEY, &["@read", "@string", "@fast"]),
    spec("set", -3, WRITE, ONE_KEY, &["@write", "@string", "@slow"]),
    spec(
        "getdel",
        2,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@string", "@fast"],
    ),
    spec(
        "getex",
        -2,
        WRITE_FAST,
        ONE_KEY,
        &["@write", "@string", "@fast"],
    ),
    spec(
        "del",
        -2,
        &["write"],
        ALL_KEYS,
        &["@keyspace", "@write", "@slow"],
    ),
    spec(
        "unlink",
        -2,
        WRITE_FAST,
        ALL_KEYS,
        &["@keyspace", "@write", "@fast"],
    ),
    spec(
        "exists",
        -2,
        READ,
        ALL_KEYS,
        &["@keyspace", "@read", "@fast"],
    ),
    spec(
        "expire",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    spec(
        "pexpire",
        -3,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    spec(
        "persist",
        2,
        WRITE_FAST,
        ONE_KEY,
        &["@keyspace", "@write", "@fast"],
    ),
    spec("ttl", 2, READ, ONE_KEY, &["@keyspace", "@read", "@fast"]),
    spec("pttl", 2, READ, ONE_KEY, &["@keyspace", "@read", "@fast"]),
    spec("mget", -2, READ, ALL_KEYS, &["@read", "@string", "@fast"]),
    spec(
        "mset",
        -3,
        WRITE,
        (1, -1, 2),
        &["@write", "@string", "@slow"],
    ),
    spec("dbsize", 1, READ, NO_KEYS, &["@keyspace", "@read", "@fast"]),
    spec("ping", -1, &["fast"], NO_KEYS, &["@fast", "@connection"]),
    spec("echo", 2, &["fast"], NO_KEYS, &["@fast", "@connection"]),
    spec("hello", -1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    spec("auth", -2, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    spec("select", 2, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    spec("quit", -1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    spec("reset", 1, CONNECTION, NO_KEYS, &["@fast", "@connection"]),
    spec(
        "client",
        -2,
        &["noscript", "loading", "stale"],
        NO_KEYS,
        &["@slow", "@connection"],
    ),
    spec(
        "command",
        -1,
        &["loading", "stale"],
        NO_KEYS,
        &["@slow", "@connection"],
    ),
    spec(
        "info",
        -1,
        &["loading", "stale"],
        NO_KEYS,
        &["@slow", "@dangerous"],
    ),
    spec(
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
        &["@admin", "@slow", "@dangerous"],
    ),
    spec("cluster", -2, &["stale"], NO_KEYS, &["@slow"]),
    spec(
        "readonly",
        1,
        CONNECTION,
        NO_KEYS,
        &["@fast", "@connection"],
    ),
    spec(
        "readwrite",
        1,
        CONNECTION,
        NO_KEYS,
        &["@fast", "@connection"],
    ),
];

/// The command named `name`, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    position(name).map(|at| &COMMANDS[at])
}

/// Where the command named `name` is in [`COMMANDS`] (its index in the metrics).
fn position(name: &[u8]) -> Option<usize> {
    COMMANDS
        .iter()
        .position(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Runs one command, writes its reply, and records its latency and outcome.
pub async fn execute(session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> Flow {
    let Some(name) = args.first() else {
        return Flow::Continue;
    };
    let started = std::time::Instant::now();
    let command = position(name);
    let spec = command.map(|at| &COMMANDS[at]);
    let (flow, ok) = execute_untimed(spec, session, args, reply).await;
    session
        .metrics()
        .resp_command(command, ok, started.elapsed());
    flow
}

/// Runs the command `spec` (None: one kache does not know) and writes its reply;
/// whether the reply is not an error.
async fn execute_untimed(
    spec: Option<&'static Spec>,
    session: &mut Session,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> (Flow, bool) {
    let Some(spec) = spec else {
        reply.error(&unknown_command(args));
        return (Flow::Continue, false);
    };
    let count = args.len() as i64;
    if (spec.arity > 0 && count != spec.arity) || (spec.arity < 0 && count < -spec.arity) {
        reply.error(&RespError::arity(spec.name).to_string());
        return (Flow::Continue, false);
    }
    if session.auth_on() {
        let (access, name) = access(spec, args);
        if let Err((refused, flow)) = session.authorize(access, &name) {
            reply.error(&refused.to_string());
            return (flow, false);
        }
    }
    session.count_command();
    let outcome = run(spec.name, session, args, reply).await;
    match outcome {
        Ok(flow) => {
            // A write's reply goes out only once the log holds it (`--fsync always`). A
            // refused one (an error reply) changed nothing to wait for.
            session.wrote |= spec.flags.contains(&"write");
            (flow, true)
        }
        Err(err) => {
            reply.error(&err.to_string());
            (Flow::Continue, false)
        }
    }
}

/// What a command needs with auth on, and its name in a NOPERM reply (Redis's
/// `command|subcommand` where the subcommand decides).
///
/// - Open: the handshake (AUTH, HELLO, QUIT, RESET) and PING, as the contract between
///   kache's parts says (Redis 7 answers an unauthenticated PING with NOAUTH).
/// - read: reads of keys, and the connection and server commands that touch no key
///   (ECHO, SELECT, CLIENT, COMMAND, INFO, CLUSTER, READONLY, READWRITE, CONFIG GET):
///   any authenticated client needs them to connect and route.
/// - readwrite: every command that writes or deletes a key.
/// - admin: CONFIG's other subcommands (SET, RESETSTAT, REWRITE; refused anyway: kache is
///   configured by its flags), and any command added to the table without a class.
pub fn access(spec: &Spec, args: &[Bytes]) -> (Access, Cow<'static, str>) {
    let needs = |role| Access::Needs(role);
    let access = match spec.name {
        "auth" | "hello" | "quit" | "reset" | "ping" => Access::Open,
        "get" | "exists" | "ttl" | "pttl" | "mget" | "dbsize" | "echo" | "select" | "client"
        | "command" | "info" | "cluster" | "readonly" | "readwrite" => needs(Role::Read),
        "set" | "getdel" | "getex" | "del" | "unlink" | "expire" | "pexpire" | "persist"
        | "mset" => needs(Role::ReadWrite),
        "config" => {
            let sub = args
                .get(1)
                .map(|sub| sub.to_ascii_lowercase())
                .unwrap_or_default();
            let role = if sub == b"get" {
                Role::Read
            } else {
                Role::Admin
            };
            let name = format!("config|{}", String::from_utf8_lossy(&sub));
            return (needs(role), Cow::Owned(name));
        }
        _ => needs(Role::Admin),
    };
    (access, Cow::Borrowed(spec.name))
}

async fn run(
    name: &str,
    session: &mut Session,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Result<Flow, RespError> {
    let done: RespResult = match name {
        "get" => keys::get(session, args, reply).await,
        "set" => keys::set(session, args, reply).await,
        "getdel" => keys::getdel(session, args, reply).await,
        "getex" => keys::getex(session, args, reply).await,
        "del" | "unlink" => keys::del(session, args, reply).await,
        "exists" => keys::exists(session, args, reply).await,
        "expire" => keys::expire(session, args, reply, 1000).await,
        "pexpire" => keys::expire(session, args, reply, 1).await,
        "persist" => keys::persist(session, args, reply).await,
        "ttl" => keys::ttl(session, args, reply, 1000).await,
        "pttl" => keys::ttl(session, args, reply, 1).await,
        "mget" => keys::mget(session, args, reply).await,
        "mset" => keys::mset(session, args, reply).await,
        "cluster" => cluster::cluster(session, args, reply),
        "quit" => {
            reply.ok();
            return Ok(Flow::Close);
        }
        _ => server::run(name, session, args, reply),
    };
    done.map(|()| Flow::Continue)
}

/// The name of every command in the table, in its order (the RESP metrics' labels).
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|spec| spec.name)
}

/// Redis's wording: `ERR unknown command 'x', with args beginning with: 'a' 'b' `.
fn unknown_command(args: &[Bytes]) -> String {
    let quoted = |arg: &Bytes| {
        let text = String::from_utf8_lossy(&arg[..arg.len().min(128)]).into_owned();
        format!("'{text}'")
    };
    let mut message = format!(
        "ERR unknown command {}, with args beginning with: ",
        quoted(&args[0])
    );
    for arg in args.iter().skip(1).take(8) {
        message.push_str(&quoted(arg));
        message.push(' ');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_knows_only_the_table() {
        assert_eq!(lookup(b"gEt").map(|s| s.name), Some("get"));
        assert!(lookup(b"FLUSHALL").is_none());
        let message = unknown_command(&[Bytes::from("foo"), Bytes::from("bar")]);
        assert_eq!(
            message,
            "ERR unknown command 'foo', with args beginning with: 'bar' "
        );
    }

    #[test]
    fn every_command_has_a_name_in_lower_case_and_keys_where_it_takes_them() {
        for spec in COMMANDS {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(spec.arity != 0, "{}", spec.name);
            if spec.first_key > 0 {
                assert!(spec.step > 0, "{}", spec.name);
            }
        }
    }
}
