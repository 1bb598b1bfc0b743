//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, RESET, CLIENT,
//! COMMAND, CONFIG GET, INFO, DBSIZE, READONLY and READWRITE.
//!
//! None of them touches a key. AUTH and HELLO … AUTH authenticate the connection (see
//! `Session::authenticate`). They answer what clients send when they connect (`HELLO`,
//! `CLIENT SETINFO`), probe (`COMMAND`), and what exporters and people read (`INFO`).

use std::fmt::Write as _;

use bytes::Bytes;

use super::Session;
use super::commands::{COMMANDS, Spec, lookup};
use super::errors::{self, RespError, RespResult};
use super::frame::{Reply, parse_i64};
use crate::store::EvictionPolicy;

/// The Redis version kache answers as: the one whose commands and replies it follows.
/// Clients read it to decide what they may send; `kache_version` in INFO is kache's own.
pub const REDIS_VERSION: &str = "7.2.0";

pub fn run(name: &str, session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    match name {
        "ping" => match args.get(1) {
            None => reply.simple("PONG"),
            Some(_) if args.len() > 2 => return Err(RespError::arity("ping")),
            Some(message) => reply.bulk(message),
        },
        "echo" => reply.bulk(&args[1]),
        "hello" => return hello(session, args, reply),
        "auth" => return auth(session, args, reply),
        "select" => match parse_i64(&args[1]) {
            Some(0) => reply.ok(),
            Some(_) => return Err(RespError::Err("DB index is out of range".into())),
            None => return Err(RespError::not_integer()),
        },
        "reset" => {
            session.reset();
            reply.resp3 = false;
            reply.simple("RESET");
        }
        "client" => return client(session, args, reply),
        "command" => return command(args, reply),
        "config" => return config(session, args, reply),
        "info" => info(session, args, reply),
        "dbsize" => reply.int(i64::try_from(session.primary_keys()).unwrap_or(i64::MAX)),
        "readonly" | "readwrite" => {
            session.readonly = name == "readonly";
            reply.ok();
        }
        other => return Err(RespError::Err(format!("'{other}' is not implemented"))),
    }
    Ok(())
}

/// AUTH token | AUTH user token.
fn auth(session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let (user, token) = match args {
        [_, token] => (None, token),
        [_, user, token] => (Some(&user[..]), token),
        _ => return Err(RespError::syntax()),
    };
    session.authenticate(user, token)?;
    reply.ok();
    Ok(())
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]
fn hello(session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let mut resp3 = session.resp3;
    if let Some(version) = args.get(1) {
        match parse_i64(version) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => {
                return Err(RespError::Coded(
                    "NOPROTO unsupported protocol version".into(),
                ));
            }
            None => {
                return Err(RespError::Err(
                    "Protocol version is not an integer or out of range".into(),
                ));
            }
        }
    }
    let mut at = 2;
    let mut name = None;
    let mut credentials = None;
    while at < args.len() {
        match args[at].to_ascii_uppercase().as_slice() {
            b"AUTH" if at + 2 < args.len() => {
                credentials = Some((&args[at + 1], &args[at + 2]));
                at += 3;
            }
            b"SETNAME" if at + 1 < args.len() => {
                name = Some(args[at + 1].clone());
                at += 2;
            }
            _ => {
                return Err(RespError::Err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[at])
                )));
            }
        }
    }
    match credentials {
        Some((user, token)) => session.authenticate(Some(user), token)?,
        None if !session.authenticated() => {
            session.count_unauthenticated();
            return Err(errors::hello_no_auth());
        }
        None => {}
    }
    if let Some(name) = name {
        session.set_name(name)?;
    }
    session.resp3 = resp3;
    reply.resp3 = resp3;
    reply.map(7);
    reply.bulk(b"server");
    reply.bulk(b"redis");
    reply.bulk(b"version");
    reply.bulk(REDIS_VERSION.as_bytes());
    reply.bulk(b"proto");
    reply.int(if resp3 { 3 } else { 2 });
    reply.bulk(b"id");
    reply.int(i64::try_from(session.id).unwrap_or(i64::MAX));
    reply.bulk(b"mode");
    reply.bulk(if session.clustered() {
        b"cluster"
    } else {
        b"standalone"
    });
    reply.bulk(b"role");
    reply.bulk(b"master");
    reply.bulk(b"modules");
    reply.array(0);
    Ok(())
}

/// CLIENT ID | GETNAME | SETNAME name | SETINFO attr value | INFO
fn client(session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"ID", 2) => reply.int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        (b"GETNAME", 2) => match &session.name {
            Some(name) => reply.bulk(name),
            None => reply.null(),
        },
        (b"SETNAME", 3) => {
            session.set_name(args[2].clone())?;
            reply.ok();
        }
        (b"SETINFO", 4) => {
            let attribute = args[2].to_ascii_uppercase();
            if attribute != b"LIB-NAME" && attribute != b"LIB-VER" {
                return Err(RespError::Err(format!(
                    "Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[2])
                )));
            }
            reply.ok();
        }
        (b"INFO", 2) => reply.text(&session.client_line()),
        (b"ID" | b"GETNAME" | b"SETNAME" | b"SETINFO" | b"INFO", _) => {
            return Err(RespError::Err(format!(
                "wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&args[1]).to_ascii_lowercase()
            )));
        }
        _ => return Err(unknown_subcommand(&args[1], "CLIENT")),
    }
    Ok(())
}

pub fn unknown_subcommand(sub: &[u8], command: &str) -> RespError {
    RespError::Err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

/// COMMAND | COMMAND COUNT | COMMAND INFO name… | COMMAND DOCS [name…] | COMMAND LIST
fn command(args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let Some(sub) = args.get(1) else {
        reply.array(COMMANDS.len());
        COMMANDS.iter().for_each(|spec| describe(spec, reply));
        return Ok(());
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => reply.int(COMMANDS.len() as i64),
        b"LIST" => {
            reply.array(COMMANDS.len());
            COMMANDS
                .iter()
                .for_each(|spec| reply.bulk(spec.name.as_bytes()));
        }
        b"INFO" => {
            reply.array(args.len() - 2);
            for name in &args[2..] {
                match lookup(name) {
                    Some(spec) => describe(spec, reply),
                    None => reply.null(),
                }
            }
        }
        // Documentation is for people: redis-cli asks for it to show hints, and takes
        // an empty answer as "none".
        b"DOCS" => reply.map(0),
        _ => return Err(unknown_subcommand(sub, "COMMAND")),
    }
    Ok(())
}

/// One command as Redis 7 describes it: name, arity, flags, first key, last key, step,
/// ACL categories, tips, key specs and subcommands (the last three empty).
fn describe(spec: &Spec, reply: &mut Reply<'_>) {
    reply.array(10);
    reply.bulk(spec.name.as_bytes());
    reply.int(spec.arity);
    reply.array(spec.flags.len());
    spec.flags.iter().for_each(|flag| reply.simple(flag));
    reply.int(spec.first_key);
    reply.int(spec.last_key);
    reply.int(spec.step);
    reply.array(spec.categories.len());
    spec.categories.iter().for_each(|c| reply.simple(c));
    reply.array(0);
    reply.array(0);
    reply.array(0);
}

/// CONFIG GET pattern…: the few parameters clients and exporters read; setting any is
/// refused (kache is configured by flags, or by its CacheCluster).
fn config(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    let sub = args[1].to_ascii_uppercase();
    if sub.as_slice() != b"GET" {
        if sub.as_slice() == b"SET"
            || sub.as_slice() == b"RESETSTAT"
            || sub.as_slice() == b"REWRITE"
        {
            return Err(RespError::Err(
                "kache is configured by its flags (or its CacheCluster), not CONFIG SET".into(),
            ));
        }
        return Err(unknown_subcommand(&args[1], "CONFIG"));
    }
    if args.len() < 3 {
        return Err(RespError::Err(
            "wrong number of arguments for 'config|get' command".into(),
        ));
    }
    let store = session.cluster().store();
    let parameters = [
        ("maxmemory", store.config().max_memory.to_string()),
        (
            "maxmemory-policy",
            policy_name(store.config().eviction).to_owned(),
        ),
        ("maxclients", session.max_clients().to_string()),
        ("databases", "1".to_owned()),
        (
            "cluster-enabled",
            if session.clustered() { "yes" } else { "no" }.to_owned(),
        ),
        ("save", String::new()),
        ("appendonly", "no".to_owned()),
    ];
    let matching: Vec<_> = parameters
        .iter()
        .filter(|(name, _)| {
            args[2..]
                .iter()
                .any(|pattern| glob_match(pattern, name.as_bytes()))
        })
        .collect();
    reply.map(matching.len());
    for (name, value) in matching {
        reply.bulk(name.as_bytes());
        reply.bulk(value.as_bytes());
    }
    Ok(())
}

/// Redis's glob for CONFIG GET, as far as parameter names need: `*`, `?` and literals,
/// case-insensitive.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob_match(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, n)| glob_match(pattern, n))
        }
        (Some((b'?', rest)), Some((_, n))) => glob_match(rest, n),
        (Some((p, rest)), Some((c, n))) if p.eq_ignore_ascii_case(c) => glob_match(rest, n),
        _ => false,
    }
}

fn policy_name(policy: EvictionPolicy) -> &'static str {
    match policy {
        EvictionPolicy::Lru => "allkeys-lru",
        EvictionPolicy::Lfu => "allkeys-lfu",
        EvictionPolicy::None => "noeviction",
    }
}

const SECTIONS: [&str; 6] = [
    "server", "clients", "memory", "stats", "keyspace", "cluster",
];

/// INFO [section …]: Redis's sections and field names, with kache's figures.
fn info(session: &Session, args: &[Bytes], reply: &mut Reply<'_>) {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let everything = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let mut text = String::new();
    for section in SECTIONS {
        if everything || wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            info_section(session, section, &mut text);
        }
    }
    reply.text(&text);
}

fn info_section(session: &Session, section: &str, text: &mut String) {
    let store = session.cluster().store();
    let stats = store.stats();
    let counters = session.counters();
    let mut heading = section.to_owned();
    heading[..1].make_ascii_uppercase();
    let _ = write!(text, "# {heading}\r\n");
    let mut field = |name: &str, value: &dyn std::fmt::Display| {
        let _ = write!(text, "{name}:{value}\r\n");
    };
    match section {
        "server" => {
            field("redis_version", &REDIS_VERSION);
            field(
                "redis_mode",
                &if session.clustered() {
                    "cluster"
                } else {
                    "standalone"
                },
            );
            field("kache_version", &env!("CARGO_PKG_VERSION"));
            field("kache_node_id", &session.cluster().node_id());
            field("os", &std::env::consts::OS);
            field("arch_bits", &64);
            field("process_id", &std::process::id());
            field("tcp_port", &session.local.port());
            field("uptime_in_seconds", &counters.uptime().as_secs());
            field("uptime_in_days", &(counters.uptime().as_secs() / 86_400));
        }
        "clients" => {
            field("connected_clients", &counters.connected());
            field("maxclients", &session.max_clients());
        }
        "memory" => {
            field("used_memory", &stats.bytes);
            field("maxmemory", &stats.max_memory);
            field("maxmemory_policy", &policy_name(store.config().eviction));
        }
        "stats" => {
            field("total_connections_received", &counters.received());
            field("total_commands_processed", &counters.commands());
            field("rejected_connections", &counters.rejected());
            field("keyspace_hits", &stats.hits);
            field("keyspace_misses", &stats.misses);
            field("evicted_keys", &stats.evictions);
            field("expired_keys", &stats.expirations);
        }
        "keyspace" => {
            if stats.keys > 0 {
                field(
                    "db0",
                    &format_args!("keys={},expires=0,avg_ttl=0", stats.keys),
                );
            }
        }
        _ => {
            field("cluster_enabled", &u8::from(session.clustered()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_patterns_glob_like_redis() {
        assert!(glob_match(b"maxmemory*", b"maxmemory-policy"));
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"MAXMEMORY", b"maxmemory"));
        assert!(glob_match(b"max?lients", b"maxclients"));
        assert!(!glob_match(b"maxmemory", b"maxmemory-policy"));
    }
}
