//! Proves client authentication on a real `kache-node` process with `--auth-dir`: HTTP
//! answers 401 without a valid token and 403 for too low a role and changes nothing
//! then; RESP speaks NOAUTH, WRONGPASS and NOPERM to the real `redis-cli` and redis-py;
//! a token rewritten in its file is swapped within one reload (the old one refused, over
//! HTTP and on an open RESP connection), a directory that cannot be read keeps the tokens
//! in force, and no token ever reaches the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Node;
use reqwest::StatusCode;

// Distinctive, so that finding one in the log cannot be a coincidence.
const READ_TOKEN: &str = "rd-Q3v9xKp2LmT8";
const WRITE_TOKEN: &str = "wr-Zt7bN4cY1sH6";
const ROTATED_TOKEN: &str = "wr-rotated-Jf5Ue0";
const ADMIN_TOKEN: &str = "ad-8PqWm2Rk4Vx0";

/// An `--auth-dir` laid out as the operator mounts Secrets: `reader` (read), `writer`
/// (readwrite) and `admin` (admin), each in a Kubernetes-style Secret volume (data in a
/// `..<timestamp>` dir behind `..data`, the key a symlink through it).
fn auth_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (role, secret, user, token) in [
        ("read", "app-readers", "reader", READ_TOKEN),
        ("readwrite", "app-writers", "writer", WRITE_TOKEN),
        ("admin", "cache-auth", "admin", ADMIN_TOKEN),
    ] {
        let volume = dir.path().join(role).join(secret);
        let data = volume.join("..2025_01_01_00_00_00.000000001");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(user), format!("{token}\n")).unwrap();
        std::os::unix::fs::symlink(data.file_name().unwrap(), volume.join("..data")).unwrap();
        std::os::unix::fs::symlink(format!("..data/{user}"), volume.join(user)).unwrap();
    }
    dir
}

fn start(dir: &Path) -> Node {
    let node = Node::start(&["--auth-dir", dir.to_str().unwrap()]);
    node.wait_ready(Duration::from_secs(10));
    node
}

async fn send(
    node: &Node,
    method: reqwest::Method,
    key: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = node
        .http
        .request(method, node.url(&format!("/v1/keys/{key}")))
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn value_of(node: &Node, key: &str) -> (StatusCode, String) {
    let reply = send(node, reqwest::Method::GET, key, Some(READ_TOKEN), "").await;
    (reply.status(), reply.text().await.unwrap())
}

async fn metric(node: &Node, line_start: &str) -> u64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Every log line the node wrote so far has none of the tokens.
fn assert_no_token_logged(node: &Node) {
    let lines: Vec<String> = node.logs.lock().unwrap().try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("client tokens loaded")),
        "the node logs its table: {lines:#?}"
    );
    for line in &lines {
        for token in [READ_TOKEN, WRITE_TOKEN, ROTATED_TOKEN, ADMIN_TOKEN] {
            assert!(!line.contains(token), "a token in the log: {line}");
        }
    }
}

#[tokio::test]
async fn http_refuses_without_a_valid_token_or_role_and_changes_nothing() {
    use reqwest::Method;
    let dir = auth_dir();
    let node = start(dir.path());

    // Open endpoints answer without a token.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/cluster",
        "/v1/openapi.json",
    ] {
        assert_eq!(node.get(path).await.status(), StatusCode::OK, "{path}");
    }

    // 401: no token, an unknown one, another scheme; with the challenge and a JSON body.
    for token in [None, Some("not-a-token")] {
        let reply = send(&node, Method::PUT, "k", token, "v").await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            reply.headers()["www-authenticate"],
            r#"Bearer realm="kache""#
        );
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    let basic = node
        .http
        .get(node.url("/v1/keys/k"))
        .basic_auth("reader", Some(READ_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        value_of(&node, "k").await.0,
        StatusCode::NOT_FOUND,
        "nothing written"
    );

    // A reader may read, not write or delete: 403.
    let reply = send(&node, Method::PUT, "k", Some(READ_TOKEN), "v").await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        value_of(&node, "k").await.0,
        StatusCode::NOT_FOUND,
        "nothing written"
    );

    // The right roles succeed.
    let put = send(&node, Method::PUT, "k", Some(WRITE_TOKEN), "v1").await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let put = send(&node, Method::PUT, "k", Some(ADMIN_TOKEN), "v2").await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        value_of(&node, "k").await,
        (StatusCode::OK, "v2".to_owned())
    );

    // A DELETE with a wrong token, or a reader's, leaves the key.
    for token in [None, Some("wrong"), Some(READ_TOKEN)] {
        let delete = send(&node, Method::DELETE, "k", token, "").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&delete.status()),
            "{token:?}: {}",
            delete.status()
        );
        assert_eq!(
            value_of(&node, "k").await,
            (StatusCode::OK, "v2".to_owned())
        );
    }
    let delete = send(&node, Method::DELETE, "k", Some(WRITE_TOKEN), "").await;
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(value_of(&node, "k").await.0, StatusCode::NOT_FOUND);

    // 401: PUT without a token and with an unknown one, Basic, two DELETEs; 403: the
    // reader's PUT and DELETE.
    let refused = r#"kache_auth_refused_total{protocol="http",reason="#;
    assert_eq!(
        metric(&node, &format!(r#"{refused}"unauthenticated"}}"#)).await,
        5
    );
    assert_eq!(
        metric(&node, &format!(r#"{refused}"forbidden"}}"#)).await,
        2
    );
    assert_no_token_logged(&node);
}

/// Sends one RESP command on `stream` and reads one line of reply (these replies are
/// single lines: status, error, integer, or a null or short bulk string's header).
fn resp_call(stream: &mut TcpStream, args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut byte = [0];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

#[tokio::test]
async fn a_rewritten_token_replaces_the_old_within_one_reload_and_a_failed_read_keeps_the_table() {
    use reqwest::Method;
    let dir = auth_dir();
    let node = start(dir.path());
    let resp = node.resp.unwrap();
    assert_eq!(
        send(&node, Method::PUT, "k", Some(WRITE_TOKEN), "v")
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut connection = TcpStream::connect(resp).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        resp_call(&mut connection, &["AUTH", "writer", WRITE_TOKEN]),
        "+OK\r\n"
    );

    // The directory vanishes (a failed read): the tokens read before stay in force.
    let parking = tempfile::tempdir().unwrap();
    let away = parking.path().join("auth");
    std::fs::rename(dir.path(), &away).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while metric(&node, "kache_auth_reload_failures_total").await == 0 {
        assert!(Instant::now() < deadline, "no reload attempted in 8 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        send(&node, Method::PUT, "k", Some(WRITE_TOKEN), "v")
            .await
            .status(),
        StatusCode::NO_CONTENT,
        "the table in force survives a failed read"
    );
    assert_eq!(resp_call(&mut connection, &["SET", "k", "v"]), "+OK\r\n");
    std::fs::rename(&away, dir.path()).unwrap();

    // Rotation: the writer's file gets a new token.
    let file: PathBuf = dir.path().join("readwrite/app-writers/writer");
    std::fs::write(&file, ROTATED_TOKEN).unwrap();
    let rotated = Instant::now();
    loop {
        let status = send(&node, Method::PUT, "k", Some(ROTATED_TOKEN), "v")
            .await
            .status();
        if status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            rotated.elapsed() < Duration::from_secs(7),
            "the new token was not accepted within 7 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = rotated.elapsed();
    assert_eq!(
        send(&node, Method::PUT, "k", Some(WRITE_TOKEN), "old")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the old token is refused once the new one is in (after {took:?})"
    );
    assert_eq!(value_of(&node, "k").await, (StatusCode::OK, "v".to_owned()));

    // The RESP connection authenticated with the old token is refused and closed.
    assert_eq!(
        resp_call(&mut connection, &["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    let mut rest = Vec::new();
    assert_eq!(connection.read_to_end(&mut rest).unwrap(), 0, "closed");
    let mut fresh = TcpStream::connect(resp).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        resp_call(&mut fresh, &["AUTH", "writer", ROTATED_TOKEN]),
        "+OK\r\n"
    );
    assert_eq!(resp_call(&mut fresh, &["SET", "k", "v3"]), "+OK\r\n");
    assert_no_token_logged(&node);
}

/// `redis-cli` against the node: its stdout and stderr, trimmed.
fn redis_cli(node: &Node, args: &[&str]) -> String {
    let port = node.resp.unwrap().port().to_string();
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli runs (apt-get install redis-tools; .ci/run installs it)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim().to_owned()
}

#[tokio::test]
async fn redis_cli_authenticates_with_a_token_or_a_user_and_token() {
    let dir = auth_dir();
    let node = start(dir.path());
    assert_eq!(redis_cli(&node, &["PING"]), "PONG");
    assert_eq!(
        redis_cli(&node, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    let wrong = redis_cli(&node, &["-a", "wrong", "GET", "k"]);
    assert!(
        wrong.contains("WRONGPASS invalid username-password pair or user is disabled."),
        "{wrong}"
    );
    assert_eq!(
        redis_cli(
            &node,
            &["--user", "reader", "--pass", READ_TOKEN, "SET", "k", "v"]
        ),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(redis_cli(&node, &["-a", READ_TOKEN, "GET", "k"]), "");
    assert_eq!(
        redis_cli(&node, &["-a", WRITE_TOKEN, "SET", "k", "v"]),
        "OK"
    );
    assert_eq!(
        redis_cli(
            &node,
            &["--user", "writer", "--pass", WRITE_TOKEN, "GET", "k"]
        ),
        "v"
    );
    // -3: HELLO 3 AUTH user token in one command.
    assert_eq!(
        redis_cli(
            &node,
            &["-3", "--user", "reader", "--pass", READ_TOKEN, "GET", "k"]
        ),
        "v"
    );
    assert_no_token_logged(&node);
}

/// The redis-py that tests/resp/run.sh installs (`run.sh install`; .ci/run does).
fn redis_py() -> PathBuf {
    let cache = std::env::var_os("KACHE_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/kache"),
        PathBuf::from,
    );
    let python = cache.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash tests/resp/run.sh install`",
        python.display()
    );
    python
}

const REDIS_PY: &str = r#"
import sys, redis
port, reader, writer = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def attempt(what, call):
    try:
        print(what, "ok", call())
    except redis.exceptions.RedisError as err:
        print(what, type(err).__name__, err)
for protocol in (2, 3):
    plain = redis.Redis(port=port, protocol=protocol)
    attempt(f"resp{protocol} none get", lambda: plain.get("py"))
    bad = redis.Redis(port=port, protocol=protocol, username="reader", password="wrong")
    attempt(f"resp{protocol} wrong get", lambda: bad.get("py"))
    ro = redis.Redis(port=port, protocol=protocol, username="reader", password=reader)
    attempt(f"resp{protocol} reader set", lambda: ro.set("py", "v"))
    rw = redis.Redis(port=port, protocol=protocol, password=writer)
    attempt(f"resp{protocol} writer set", lambda: rw.set("py", "v"))
    attempt(f"resp{protocol} reader get", lambda: ro.get("py"))
"#;

#[tokio::test]
async fn redis_py_gets_its_own_auth_errors_and_succeeds_with_the_right_role() {
    let dir = auth_dir();
    let node = start(dir.path());
    let output = Command::new(redis_py())
        .args(["-c", REDIS_PY])
        .arg(node.resp.unwrap().port().to_string())
        .args([READ_TOKEN, WRITE_TOKEN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for protocol in ["resp2", "resp3"] {
        // RESP3 opens with HELLO 3, which gets Redis's own NOAUTH for HELLO.
        let unauthenticated = if protocol == "resp2" {
            "Authentication required."
        } else {
            "HELLO must be called with the client already authenticated, otherwise the HELLO \
             AUTH <user> <pass> option can be used to authenticate the client and select the \
             RESP protocol version at the same time"
        };
        let expected = [
            format!("{protocol} none get AuthenticationError {unauthenticated}"),
            format!(
                "{protocol} wrong get AuthenticationError invalid username-password pair or \
                 user is disabled."
            ),
            format!(
                "{protocol} reader set NoPermissionError User reader has no permissions to run \
                 the 'set' command"
            ),
            format!("{protocol} writer set ok True"),
            format!("{protocol} reader get ok b'v'"),
        ];
        for line in expected {
            assert!(lines.contains(&line.as_str()), "{line}\nnot in\n{stdout}");
        }
    }
    assert_no_token_logged(&node);
}
