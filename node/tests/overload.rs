//! Proves the real `kache-node` binary bounds what abusive HTTP clients can hold: a
//! connection that never finishes its headers (or idles) is closed after
//! `--http-header-timeout`, connections over `--max-connections` are closed on accept,
//! and a batch of millions of tiny keys is refused without the node's memory growing
//! with the key count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Node;

fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

/// Reads until the server closes the connection and returns what it sent; panics if it
/// is still open after the 5 s read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return received,
            Err(err) => panic!("the server kept the connection open: {err}"),
        }
    }
}

/// One request on `stream`, kept alive; returns the response head and body.
fn exchange(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut buf = [0; 65536];
    let n = stream.read(&mut buf).expect("a response");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `GET /metrics` on a connection of its own; None while the node refuses it.
fn metrics(node: &Node) -> Option<String> {
    let mut stream = connect(node);
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).ok()?;
    let reply = String::from_utf8(read_until_closed(&mut stream)).expect("text");
    reply.starts_with("HTTP/1.1 200").then_some(reply)
}

fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .parse()
        .expect("a number")
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    let node = Node::start(&["--http-header-timeout", "300ms"]);
    let mut slow = connect(&node);
    slow.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    let mut idle = connect(&node);
    assert!(exchange(&mut idle, "/healthz").starts_with("HTTP/1.1 200"));

    let started = Instant::now();
    assert!(
        read_until_closed(&mut slow).is_empty(),
        "closed without an answer"
    );
    assert!(
        read_until_closed(&mut idle).is_empty(),
        "an idle keep-alive is closed too"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed promptly"
    );

    // A client that sends its head in time is served as before.
    let metrics = metrics(&node).expect("served");
    assert_eq!(sample(&metrics, "kache_http_header_timeouts_total"), 2);
}

#[test]
fn connections_over_the_cap_are_closed_on_accept() {
    let node = Node::start(&["--max-connections", "2"]);
    // Answered, so admitted, and then held open by keep-alive.
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(&node)).collect();
    for stream in &mut held {
        assert!(exchange(stream, "/healthz").starts_with("HTTP/1.1 200"));
    }

    let mut over = connect(&node);
    // The server may close before the request is written; only the answer matters.
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(read_until_closed(&mut over).is_empty(), "closed unanswered");

    // A slot frees once a held connection closes (the node notices the close a moment
    // later); the refusals above are counted.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        if let Some(metrics) = metrics(&node) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(sample(&metrics, "kache_http_connections_refused_total") >= 1);
    assert_eq!(sample(&metrics, "kache_http_connections"), 2);
}

/// Peak resident memory of a process, from /proc.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_batch_of_millions_of_keys_is_refused_in_bounded_memory() {
    let node = Node::start(&[]);
    // 4 million one-letter keys in just under the default 16 MiB body limit. Parsed into
    // a Vec<String> they took the node (debug build) from 19 MB to 252 MB of RSS.
    let keys = 4_000_000;
    let mut body = String::with_capacity(16 << 20);
    body.push_str("{\"keys\":[\"a\"");
    body.push_str(&",\"a\"".repeat(keys - 1));
    body.push_str("]}");
    let mut stream = connect(&node);
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /v1/batch/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();

    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("\"too_many_items\""), "{reply}");
    assert!(reply.contains("got 4000000"), "the true count: {reply}");
    let peak = peak_rss(node.child.id());
    assert!(
        peak < 120 << 20,
        "peak RSS {} MiB: the keys were materialised",
        peak >> 20
    );
}
