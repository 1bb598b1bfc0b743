//! Shared harness: a real `kache-node` process, killed on drop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test harness: each test crate uses part of it, and a failed step fails the test"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_kache-node");

/// A node process on 127.0.0.1:0. Killed on drop, so a failing test leaves nothing behind.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: std::sync::Mutex<mpsc::Receiver<String>>,
    pub http: reqwest::Client,
}

impl Node {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(
            &[
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--node-id",
                "it",
            ],
            args,
        )
    }

    /// Starts a node with `base` flags, then `args` (later flags win).
    pub fn start_with(base: &[&str], args: &[&str]) -> Self {
        Self::start_env(&[], base, args)
    }

    /// Like [`Node::start_with`], with extra environment variables (such as libfaketime's
    /// `LD_PRELOAD` and `FAKETIME`). The child is the node itself, so dropping the
    /// `Node` kills the node, never just a wrapper around it.
    pub fn start_env(env: &[(&str, &str)], base: &[&str], args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(base)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kache-node");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = logs
                .recv_timeout(Duration::from_secs(10))
                .expect("node logs its listening address");
            if let Some(rest) = line.split("http_addr=").nth(1) {
                let addr = rest.split_whitespace().next().expect("address");
                break addr.parse().expect("socket address");
            }
        };
        Self {
            child,
            addr,
            logs: std::sync::Mutex::new(logs),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("PUT")
    }

    /// `PUT /v1/keys/{key}` with `value`, and one extra `header` if given.
    pub async fn put_key(
        &self,
        key: &str,
        value: &str,
        header: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .put(self.url(&format!("/v1/keys/{key}")))
            .body(value.to_owned());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send().await.expect("PUT")
    }

    /// `GET /v1/keys/{key}`: the status and the body.
    pub async fn get_key(&self, key: &str) -> (reqwest::StatusCode, String) {
        let response = self.get(&format!("/v1/keys/{key}")).await;
        (response.status(), response.text().await.expect("body"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// `POST /v1/batch/put` of `items` (`{"key", "value"}` objects); the reply's items.
    pub async fn batch_put(&self, items: Vec<Json>) -> Vec<Json> {
        let reply: Json = self
            .http
            .post(self.url("/v1/batch/put"))
            .json(&serde_json::json!({ "items": items }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["items"].as_array().unwrap().clone()
    }

    pub async fn stats(&self) -> Json {
        self.get("/v1/stats")
            .await
            .json()
            .await
            .expect("stats JSON")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the node reports ready, or fails the test after `within`.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.is_ready() {
            assert!(
                Instant::now() < deadline,
                "node {} never became ready",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /readyz` answered 200 (a blocking call, usable outside async code).
    pub fn is_ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(self.addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut reply = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.1 200")
    }

    pub fn saw_log(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .try_iter()
            .any(|line| line.contains(needle))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` ports for addresses that must be known before the nodes start (the member file
/// names them), free when handed out. They come from a block of 200 per test process
/// below Linux's ephemeral range (32768+): a port-0 bind elsewhere can then never take a
/// port between a node's death and its restart on the same address.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 60) * 200;
    let mut ports = Vec::new();
    while ports.len() < n {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < 200, "this test process used up its 200 ports");
        let port = u16::try_from(base + offset).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// How to start one node again: its environment and flags.
type Launch = (Vec<(String, String)>, Vec<String>);

/// Nodes `node-i` on loopback with a static member list (`--members`), each started with
/// its own extra environment (`envs[i]`) and the shared `extra` flags, on fixed ports.
/// Every node is killed on drop.
pub struct StaticCluster {
    pub nodes: Vec<Node>,
    pub grpc_ports: Vec<u16>,
    /// Each node's environment and flags, to start it again.
    launches: Vec<Launch>,
}

impl StaticCluster {
    pub fn start(envs: &[Vec<(&str, &str)>], replication_factor: &str, extra: &[&str]) -> Self {
        let grpc_ports = free_ports(envs.len());
        // Fixed HTTP ports too, so a restarted node is where clients left it.
        let http_ports = free_ports(envs.len());
        let members: Vec<String> = grpc_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("node-{i}=127.0.0.1:{port}"))
            .collect();
        let members = members.join(",");
        let launches: Vec<Launch> = envs
            .iter()
            .enumerate()
            .map(|(i, env)| {
                let env = env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                let mut args: Vec<String> = [
                    "--http-addr",
                    &format!("127.0.0.1:{}", http_ports[i]),
                    "--grpc-addr",
                    &format!("127.0.0.1:{}", grpc_ports[i]),
                    "--node-id",
                    &format!("node-{i}"),
                    "--members",
                    &members,
                    "--replication-factor",
                    replication_factor,
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                args.extend(extra.iter().map(|s| (*s).to_owned()));
                (env, args)
            })
            .collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            grpc_ports,
            launches,
        };
        cluster.nodes = (0..envs.len()).map(|i| cluster.launch(i)).collect();
        for node in &cluster.nodes {
            node.wait_ready(Duration::from_secs(20));
        }
        cluster
    }

    /// Starts node `i` as it was first started (same id, ports and flags).
    pub fn launch(&self, i: usize) -> Node {
        let (env, args) = &self.launches[i];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_env(&env, &[], &args)
    }

    /// Keys whose first-ranked owner is `owner`.
    pub async fn keys_owned_by(&self, owner: &str, count: usize) -> Vec<String> {
        let mut keys = Vec::new();
        for i in 0..10_000 {
            let key = format!("k{i}");
            let placement: Json = self.nodes[0]
                .get(&format!("/v1/cluster/keys/{key}"))
                .await
                .json()
                .await
                .unwrap();
            if placement["owners"][0] == owner {
                keys.push(key);
                if keys.len() == count {
                    return keys;
                }
            }
        }
        panic!("fewer than {count} keys owned by {owner}");
    }

    /// A raw peer-protocol client for node `i`.
    pub async fn peer(
        &self,
        i: usize,
    ) -> kache_node::cluster::wire::proto::peer_client::PeerClient<tonic::transport::Channel> {
        kache_node::cluster::wire::proto::peer_client::PeerClient::connect(format!(
            "http://127.0.0.1:{}",
            self.grpc_ports[i]
        ))
        .await
        .unwrap()
    }
}
