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

pub mod certs;

pub const BIN: &str = env!("CARGO_BIN_EXE_kache-node");

/// A node process on 127.0.0.1:0. Killed on drop, so a failing test leaves nothing behind.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    /// The RESP listener, unless `--resp-addr off`.
    pub resp: Option<SocketAddr>,
    pub logs: std::sync::Mutex<mpsc::Receiver<String>>,
    /// The log lines up to the one naming the listening addresses (that one included),
    /// which `logs` no longer has.
    pub startup_logs: Vec<String>,
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
                "--resp-addr",
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
        Self::start_as(None, env, base, args)
    }

    /// Like [`Node::start_env`], as user `uid` when given (root only): the fault suite
    /// tells nodes' traffic apart by its owner to cut one peer link ([`LinkCut`]).
    pub fn start_as(uid: Option<u32>, env: &[(&str, &str)], base: &[&str], args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        // `info` unless the test sets its own RUST_LOG.
        command
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .args(base)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().expect("spawn kache-node");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup_logs = Vec::new();
        let (addr, resp) = loop {
            let line = logs
                .recv_timeout(Duration::from_secs(10))
                .expect("node logs its listening address");
            let listening = listening_addresses(&line);
            startup_logs.push(line);
            if let Some(addresses) = listening {
                break addresses;
            }
        };
        Self {
            child,
            addr,
            resp,
            logs: std::sync::Mutex::new(logs),
            startup_logs,
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

/// The HTTP and RESP addresses of the node's "listening" line, in either log format
/// (`http_addr=...` in text, `"http_addr":"..."` in JSON).
fn listening_addresses(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    if let Ok(Json::Object(fields)) = serde_json::from_str::<Json>(line) {
        let field = |name: &str| fields.get(name)?.as_str()?.parse::<SocketAddr>().ok();
        return Some((field("http_addr")?, field("resp_addr")));
    }
    let field = |name: &str| {
        let rest = line.split(name).nth(1)?;
        rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
    };
    Some((field("http_addr=")?, field("resp_addr=")))
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

/// How a [`StaticCluster`] is started beyond each node's environment.
#[derive(Default)]
pub struct Options<'a> {
    /// Flags every node gets.
    pub extra: &'a [&'a str],
    /// Run node `i` as user `first_uid + i` (root only), for [`LinkCut`].
    pub first_uid: Option<u32>,
    /// Use a watched member file (`--members-file`) listing only the first `n` nodes at
    /// epoch 1, instead of a static `--members` list of all of them; change it with
    /// [`StaticCluster::write_list`].
    pub listed: Option<usize>,
}

/// Nodes `node-i` on loopback with a static member list (`--members`), each started with
/// its own extra environment (`envs[i]`) and the shared `extra` flags, on fixed ports.
/// Every node is killed on drop.
pub struct StaticCluster {
    pub nodes: Vec<Node>,
    pub grpc_ports: Vec<u16>,
    /// Each node's environment and flags, to start it again.
    launches: Vec<Launch>,
    first_uid: Option<u32>,
    replication_factor: String,
    /// The watched member file and its directory, when [`Options::listed`] is set.
    members_file: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Drop for StaticCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        if let Some((_, dir)) = &self.members_file {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl StaticCluster {
    pub fn start(envs: &[Vec<(&str, &str)>], replication_factor: &str, extra: &[&str]) -> Self {
        Self::start_with(
            envs,
            replication_factor,
            &Options {
                extra,
                ..Options::default()
            },
        )
    }

    pub fn start_with(
        envs: &[Vec<(&str, &str)>],
        replication_factor: &str,
        options: &Options<'_>,
    ) -> Self {
        let extra = options.extra;
        let grpc_ports = free_ports(envs.len());
        // Fixed HTTP ports too, so a restarted node is where clients left it.
        let http_ports = free_ports(envs.len());
        let members: Vec<String> = grpc_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("node-{i}=127.0.0.1:{port}"))
            .collect();
        let members = members.join(",");
        let members_file = options.listed.map(|_| {
            let dir = std::env::temp_dir().join(format!(
                "kache-static-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            (dir.join("members.yaml"), dir)
        });
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
                    "--resp-addr",
                    "127.0.0.1:0",
                    "--node-id",
                    &format!("node-{i}"),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                match &members_file {
                    Some((file, _)) => {
                        args.extend(["--members-file".to_owned(), file.display().to_string()]);
                    }
                    None => args.extend([
                        "--members".to_owned(),
                        members.clone(),
                        "--replication-factor".to_owned(),
                        replication_factor.to_owned(),
                    ]),
                }
                args.extend(extra.iter().map(|s| (*s).to_owned()));
                (env, args)
            })
            .collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            grpc_ports,
            launches,
            first_uid: options.first_uid,
            replication_factor: replication_factor.to_owned(),
            members_file,
        };
        if let Some(listed) = options.listed {
            cluster.write_list(1, &(0..listed).collect::<Vec<_>>(), &[]);
        }
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
        Node::start_as(self.uid(i), &env, &[], &args)
    }

    /// Node `i`'s user, when the cluster runs nodes as distinct users.
    pub fn uid(&self, i: usize) -> Option<u32> {
        self.first_uid
            .map(|first| first + u32::try_from(i).expect("a handful of nodes"))
    }

    /// Publishes a member list through the watched file ([`Options::listed`]).
    pub fn write_list(&self, epoch: u64, members: &[usize], departing: &[usize]) {
        let (file, dir) = self
            .members_file
            .as_ref()
            .expect("started with Options::listed");
        let mut yaml = format!(
            "epoch: {epoch}\npartitions: 271\nreplicationFactor: {}\n",
            self.replication_factor
        );
        for (section, nodes) in [("members", members), ("departing", departing)] {
            if nodes.is_empty() {
                continue;
            }
            yaml.push_str(&format!("{section}:\n"));
            for &i in nodes {
                yaml.push_str(&format!(
                    "  - id: node-{i}\n    address: 127.0.0.1:{}\n",
                    self.grpc_ports[i]
                ));
            }
        }
        // Write then rename, so a node never reads half a file.
        let tmp = dir.join("members.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, file).unwrap();
    }

    /// Waits (up to 90 s) until node `i` follows `epoch` with no move in progress and
    /// holds nothing it does not own (a departing node: handed everything off).
    pub async fn wait_settled(&self, i: usize, epoch: u64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let report: Option<Json> = match self.nodes[i]
                .http
                .get(self.nodes[i].url("/v1/cluster"))
                .send()
                .await
            {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            if let Some(report) = &report
                && report["epoch"] == epoch
                && report["rebalance"]["active"] == false
                && report["ownership"]["heldNotOwned"] == 0
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node-{i} did not settle at epoch {epoch}: {report:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

/// A peer link cut both ways between two nodes run as distinct users: iptables drops
/// every packet either one sends to the other's peer port (a SYN or a segment of an open
/// connection alike), while clients still reach both. Removed on drop, so a failing test
/// leaves no rule behind. Needs root and iptables.
pub struct LinkCut {
    rules: Vec<Vec<String>>,
}

impl LinkCut {
    /// Cuts the link between the nodes run as `uid_a`/`uid_b` with peer ports
    /// `port_a`/`port_b`.
    pub fn between(uid_a: u32, port_a: u16, uid_b: u32, port_b: u16) -> Self {
        let rule = |uid: u32, port: u16| -> Vec<String> {
            [
                "OUTPUT",
                "-o",
                "lo",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-m",
                "owner",
                "--uid-owner",
                &uid.to_string(),
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };
        let mut cut = Self { rules: Vec::new() };
        for rule in [rule(uid_a, port_b), rule(uid_b, port_a)] {
            let status = Command::new("iptables")
                .args(["-w", "-I"])
                .args(&rule)
                .status()
                .expect("iptables runs (apt-get install iptables)");
            assert!(status.success(), "iptables -I {rule:?} failed");
            cut.rules.push(rule);
        }
        cut
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = Command::new("iptables")
                .args(["-w", "-D"])
                .args(rule)
                .status();
        }
    }
}

/// Whether this process may run nodes as other users and change iptables rules.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
