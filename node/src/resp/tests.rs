//! RESP end to end in process: a single node's listener on 127.0.0.1:0 driven over real
//! sockets, with Redis's replies checked byte for byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http::AppState;
use crate::test_support::small_config;

/// A small node (`test_support::small_config`) serving RESP on 127.0.0.1:0.
async fn node(extra: &[&str]) -> (std::net::SocketAddr, AppState) {
    let state = AppState::single_node(&small_config(extra));
    (serving(state.clone()).await, state)
}

/// Serves RESP (plaintext, single node) for `state` on 127.0.0.1:0; returns the address.
async fn serving(state: AppState) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(super::serve(
        listener,
        state,
        false,
        None,
        std::future::pending(),
    ));
    addr
}

struct Client(TcpStream);

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Sends `request` as is and reads until `expected` has arrived (or fails).
    async fn exchange(&mut self, request: &[u8], expected: &[u8]) {
        self.0.write_all(request).await.expect("write");
        let got = self.read(expected.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "request {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// One command, multibulk encoded.
    async fn call(&mut self, args: &[&str], expected: &str) {
        self.exchange(&encode(args), expected.as_bytes()).await;
    }

    async fn read(&mut self, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), self.0.read_exact(&mut got))
            .await
            .expect("reply in time")
            .expect("reply");
        got
    }

    /// Whether the server closed the connection (after any reply already read).
    async fn closed(&mut self) -> bool {
        let mut byte = [0];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.0.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

#[tokio::test]
async fn pipelined_and_inline_commands_are_answered_in_order() {
    let (addr, _) = node(&[]).await;
    let mut client = Client::connect(addr).await;
    let mut pipeline = encode(&["SET", "k", "v1"]);
    pipeline.extend(encode(&["GET", "k"]));
    pipeline.extend(b"PING\r\n");
    pipeline.extend(encode(&["ECHO", "hi"]));
    pipeline.extend(encode(&["GET", "missing"]));
    client
        .exchange(
            &pipeline,
            b"+OK\r\n$2\r\nv1\r\n+PONG\r\n$2\r\nhi\r\n$-1\r\n",
        )
        .await;
    client.exchange(b"set \"a b\" 'c d'\r\n", b"+OK\r\n").await;
    client.call(&["get", "a b"], "$3\r\nc d\r\n").await;
}

#[tokio::test]
async fn set_options_behave_as_in_redis() {
    let (addr, _) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(&["SET", "k", "a", "NX"], "+OK\r\n").await;
    c.call(&["SET", "k", "b", "NX"], "$-1\r\n").await;
    c.call(&["SET", "k", "c", "XX", "GET"], "$1\r\na\r\n").await;
    c.call(&["SET", "nope", "c", "XX"], "$-1\r\n").await;
    c.call(&["SET", "nope", "c", "XX", "GET"], "$-1\r\n").await;
    c.call(&["GET", "nope"], "$-1\r\n").await;
    c.call(&["SET", "k", "d", "EX", "100"], "+OK\r\n").await;
    c.call(&["TTL", "k"], ":100\r\n").await;
    c.call(&["SET", "k", "e", "KEEPTTL"], "+OK\r\n").await;
    c.call(&["TTL", "k"], ":100\r\n").await;
    c.call(&["SET", "k", "f"], "+OK\r\n").await;
    c.call(&["TTL", "k"], ":-1\r\n").await;
    c.call(&["SET", "k", "g", "PXAT", "1"], "+OK\r\n").await;
    c.call(&["GET", "k"], "$-1\r\n").await;
    c.call(&["TTL", "k"], ":-2\r\n").await;
    // In the past and absent already: still nothing, at once.
    c.call(&["SET", "k", "g", "EXAT", "1"], "+OK\r\n").await;
    c.call(&["SET", "k", "g", "EXAT", "1", "GET"], "$-1\r\n")
        .await;
    c.call(&["EXISTS", "k"], ":0\r\n").await;
    for (args, error) in [
        (
            &["SET", "k", "v", "EX", "0"][..],
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
        (
            &["SET", "k", "v", "EX", "1", "PX", "1"],
            "-ERR syntax error\r\n",
        ),
        (&["SET", "k", "v", "EX"], "-ERR syntax error\r\n"),
        (
            &["SET", "k", "v", "KEEPTTL", "EX", "5"],
            "-ERR syntax error\r\n",
        ),
        (
            &["SET", "k"],
            "-ERR wrong number of arguments for 'set' command\r\n",
        ),
    ] {
        c.call(args, error).await;
    }
    c.call(&["GET", "k"], "$-1\r\n").await;
}

#[tokio::test]
async fn expiry_commands_follow_redis() {
    let (addr, _) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(&["EXPIRE", "k", "10"], ":0\r\n").await;
    c.call(&["SET", "k", "v"], "+OK\r\n").await;
    c.call(&["EXPIRE", "k", "10", "XX"], ":0\r\n").await;
    c.call(&["EXPIRE", "k", "10", "NX"], ":1\r\n").await;
    c.call(&["EXPIRE", "k", "20", "NX"], ":0\r\n").await;
    c.call(&["EXPIRE", "k", "5", "GT"], ":0\r\n").await;
    c.call(&["EXPIRE", "k", "30", "GT"], ":1\r\n").await;
    c.call(&["PEXPIRE", "k", "5000", "LT"], ":1\r\n").await;
    c.call(&["TTL", "k"], ":5\r\n").await;
    c.call(&["PERSIST", "k"], ":1\r\n").await;
    c.call(&["PERSIST", "k"], ":0\r\n").await;
    c.call(&["PTTL", "k"], ":-1\r\n").await;
    c.call(&["GETEX", "k", "EX", "50"], "$1\r\nv\r\n").await;
    c.call(&["TTL", "k"], ":50\r\n").await;
    c.call(&["GETEX", "k", "PERSIST"], "$1\r\nv\r\n").await;
    c.call(&["TTL", "k"], ":-1\r\n").await;
    c.call(&["EXPIRE", "k", "-1"], ":1\r\n").await;
    c.call(&["EXISTS", "k"], ":0\r\n").await;
    c.call(
        &["EXPIRE", "k", "x"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    c.call(&["SET", "k", "v"], "+OK\r\n").await;
    c.call(&["GETDEL", "k"], "$1\r\nv\r\n").await;
    c.call(&["GETDEL", "k"], "$-1\r\n").await;
}

#[tokio::test]
async fn multi_key_commands_count_and_order_like_redis() {
    let (addr, _) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(&["MSET", "a", "0", "b", "2", "a", "1"], "+OK\r\n")
        .await;
    c.call(
        &["MSET", "a", "1", "b"],
        "-ERR wrong number of arguments for 'mset' command\r\n",
    )
    .await;
    c.call(
        &["MGET", "a", "x", "b"],
        "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
    )
    .await;
    c.call(&["EXISTS", "a", "a", "x"], ":2\r\n").await;
    c.call(&["DBSIZE"], ":2\r\n").await;
    c.call(&["DEL", "a", "x", "b"], ":2\r\n").await;
    c.call(&["UNLINK", "a"], ":0\r\n").await;
    c.call(&["DBSIZE"], ":0\r\n").await;
}

#[tokio::test]
async fn resp3_after_hello_3_and_back_after_reset() {
    let (addr, _) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n")
        .await;
    c.exchange(
        &encode(&["HELLO", "3", "SETNAME", "me"]),
        b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n",
    )
    .await;
    // Skip the rest of the map: up to and including `modules` and its empty array.
    let mut rest = Vec::new();
    while !rest.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        rest.extend(c.read(1).await);
    }
    c.call(&["GET", "nope"], "_\r\n").await;
    c.call(&["CLIENT", "GETNAME"], "$2\r\nme\r\n").await;
    c.call(&["RESET"], "+RESET\r\n").await;
    c.call(&["GET", "nope"], "$-1\r\n").await;
    c.call(&["CLIENT", "GETNAME"], "$-1\r\n").await;
    c.call(
        &["CLIENT", "SETNAME", "a b"],
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
    )
    .await;
    c.call(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"], "+OK\r\n")
        .await;
    c.call(&["SELECT", "0"], "+OK\r\n").await;
    c.call(&["SELECT", "1"], "-ERR DB index is out of range\r\n")
        .await;
    c.call(
        &["CLUSTER", "SLOTS"],
        "-ERR This instance has cluster support disabled\r\n",
    )
    .await;
    c.call(&["QUIT"], "+OK\r\n").await;
    assert!(c.closed().await, "QUIT closes the connection");
}

#[tokio::test]
async fn bad_input_gets_redis_errors_and_changes_nothing() {
    let (addr, state) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(
        &["FLUSHALL"],
        "-ERR unknown command 'FLUSHALL', with args beginning with: \r\n",
    )
    .await;
    c.call(
        &["GET"],
        "-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    c.call(
        &["SET", "", "v"],
        "-ERR the key is empty; kache keys are 1 byte or longer\r\n",
    )
    .await;
    let long_key = "k".repeat(17);
    c.call(
        &["SET", &long_key, "v"],
        "-ERR key is 17 bytes; the limit is 16 bytes (--max-key-bytes)\r\n",
    )
    .await;
    let long_value = "v".repeat(65);
    c.call(
        &["SET", "k", &long_value],
        "-ERR value is 65 bytes; the limit is 64 bytes (--max-value-bytes)\r\n",
    )
    .await;
    // (The rest of this reply is left unread: a connection of its own.)
    let mut probe = Client::connect(addr).await;
    probe
        .call(
            &["COMMAND", "INFO", "get", "nope"],
            "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n",
        )
        .await;
    assert_eq!(state.store().stats().keys, 0, "nothing was written");

    // Garbage closes only its own connection, after an error.
    let mut bad = Client::connect(addr).await;
    bad.exchange(
        b"*1\r\n+PING\r\n",
        b"-ERR Protocol error: expected '$', got '+'\r\n",
    )
    .await;
    assert!(bad.closed().await);
    // A bulk far over the limits is refused before it is read.
    let mut huge = Client::connect(addr).await;
    huge.exchange(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000000\r\n",
        b"-ERR Protocol error: the command is larger than the limit of 4096 bytes\r\n",
    )
    .await;
    assert!(huge.closed().await);
    let mut many = Client::connect(addr).await;
    many.exchange(
        b"*2000000\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    )
    .await;
    assert!(many.closed().await);
    c.call(&["PING"], "+PONG\r\n").await;
    assert_eq!(state.store().stats().keys, 0, "nothing was written");
}

#[tokio::test]
async fn connections_over_the_cap_get_redis_error() {
    let (addr, _) = node(&["--max-connections", "1"]).await;
    let mut first = Client::connect(addr).await;
    first.call(&["PING"], "+PONG\r\n").await;
    let mut second = Client::connect(addr).await;
    second
        .exchange(b"PING\r\n", b"-ERR max number of clients reached\r\n")
        .await;
    assert!(second.closed().await);
    first.call(&["PING"], "+PONG\r\n").await;
}

#[tokio::test]
async fn the_keyspace_is_the_http_apis() {
    let (addr, state) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    state
        .cluster
        .put(
            b"from-http",
            b"h",
            None,
            &crate::store::Precondition::None,
            None,
        )
        .await
        .expect("put");
    c.call(&["GET", "from-http"], "$1\r\nh\r\n").await;
    c.call(&["SET", "from-resp", "r", "EX", "60"], "+OK\r\n")
        .await;
    let value = state
        .cluster
        .get(b"from-resp", None)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(&value.data[..], b"r");
    assert!(value.ttl.is_some_and(|ttl| ttl > Duration::from_secs(59)));
    c.call(
        &["CONFIG", "GET", "maxmemory"],
        "*2\r\n$9\r\nmaxmemory\r\n$7\r\n1048576\r\n",
    )
    .await;
    c.call(
        &["INFO", "keyspace"],
        "$44\r\n# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n\r\n",
    )
    .await;
}

/// A node whose `--auth-dir` holds `reader` (`r-token`, read), `writer` (`w-token`,
/// readwrite) and `root` (`a-token`, admin).
async fn node_with_auth() -> (std::net::SocketAddr, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (role, user, token) in [
        ("read", "reader", "r-token"),
        ("readwrite", "writer", "w-token"),
        ("admin", "root", "a-token"),
    ] {
        let secret = dir.path().join(role).join("tokens");
        std::fs::create_dir_all(&secret).expect("mkdir");
        std::fs::write(secret.join(user), token).expect("write");
    }
    let auth = crate::auth::Auth::load(dir.path().to_owned()).expect("load");
    let state = AppState::single_node(&small_config(&[])).with_auth(auth);
    (serving(state.clone()).await, state, dir)
}

const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

#[tokio::test]
async fn with_auth_a_connection_authenticates_once_and_each_command_needs_its_role() {
    let (addr, state, _dir) = node_with_auth().await;
    let mut c = Client::connect(addr).await;
    // Open before AUTH: PING, and the handshake; everything else is NOAUTH.
    c.call(&["PING"], "+PONG\r\n").await;
    for command in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["INFO"],
        &["CLUSTER", "SLOTS"],
    ] {
        c.call(command, NOAUTH).await;
    }
    c.call(
        &["HELLO", "3"],
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
         the RESP protocol version at the same time\r\n",
    )
    .await;
    c.call(&["AUTH", "wrong"], WRONGPASS).await;
    c.call(&["AUTH", "writer", "r-token"], WRONGPASS).await;
    c.call(&["HELLO", "2", "AUTH", "reader", "wrong"], WRONGPASS)
        .await;
    c.call(&["AUTH", "a", "b", "c"], "-ERR syntax error\r\n")
        .await;
    c.call(&["GET", "k"], NOAUTH).await;

    // A reader reads, and is refused writes and CONFIG SET, in Redis 7.2's words.
    c.call(&["AUTH", "reader", "r-token"], "+OK\r\n").await;
    c.call(&["GET", "k"], "$-1\r\n").await;
    c.call(
        &["SET", "k", "v"],
        "-NOPERM User reader has no permissions to run the 'set' command\r\n",
    )
    .await;
    c.call(
        &["DEL", "k"],
        "-NOPERM User reader has no permissions to run the 'del' command\r\n",
    )
    .await;
    c.call(
        &["CONFIG", "SET", "maxmemory", "1"],
        "-NOPERM User reader has no permissions to run the 'config|set' command\r\n",
    )
    .await;
    c.call(
        &["CONFIG", "GET", "databases"],
        "*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    )
    .await;
    // A failed AUTH keeps the user the connection had.
    c.call(&["AUTH", "nope"], WRONGPASS).await;
    c.call(&["GET", "k"], "$-1\r\n").await;

    // The token alone (AUTH <token>, or user `default`) names its user.
    c.call(&["AUTH", "w-token"], "+OK\r\n").await;
    c.call(&["SET", "k", "v"], "+OK\r\n").await;
    c.call(&["AUTH", "default", "a-token"], "+OK\r\n").await;
    c.call(
        &["CONFIG", "SET", "maxmemory", "1"],
        "-ERR kache is configured by its flags (or its CacheCluster), not CONFIG SET\r\n",
    )
    .await;
    // RESET forgets the user.
    c.call(&["RESET"], "+RESET\r\n").await;
    c.call(&["GET", "k"], NOAUTH).await;

    // HELLO … AUTH authenticates and switches protocol in one command.
    let mut hello = Client::connect(addr).await;
    hello
        .exchange(
            &encode(&["HELLO", "3", "AUTH", "reader", "r-token"]),
            b"%7\r\n",
        )
        .await;
    let mut other = Client::connect(addr).await;
    other.call(&["GET", "k"], NOAUTH).await;

    let counts: Vec<_> = state.auth().refused().collect();
    assert_eq!(
        counts[2..],
        [("resp", "unauthenticated", 12), ("resp", "forbidden", 3)],
        "{counts:?}"
    );
}

#[tokio::test]
async fn without_auth_auth_answers_as_redis_without_a_password() {
    let (addr, _) = node(&[]).await;
    let mut c = Client::connect(addr).await;
    c.call(
        &["AUTH", "secret"],
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n",
    )
    .await;
    c.call(&["AUTH", "default", "anything"], "+OK\r\n").await;
    c.call(&["AUTH", "someone", "anything"], WRONGPASS).await;
    c.call(&["HELLO", "2", "AUTH", "someone", "x"], WRONGPASS)
        .await;
    c.exchange(&encode(&["HELLO", "3", "AUTH", "default", "x"]), b"%7\r\n")
        .await;
    let mut fresh = Client::connect(addr).await;
    fresh.call(&["SET", "k", "v"], "+OK\r\n").await;
}

#[test]
fn every_command_has_a_decided_role() {
    use crate::auth::{Access, Role};
    use bytes::Bytes;

    let open = Access::Open;
    let read = Access::Needs(Role::Read);
    let write = Access::Needs(Role::ReadWrite);
    let admin = Access::Needs(Role::Admin);
    let expected = [
        ("get", read),
        ("set", write),
        ("getdel", write),
        ("getex", write),
        ("del", write),
        ("unlink", write),
        ("exists", read),
        ("expire", write),
        ("pexpire", write),
        ("persist", write),
        ("ttl", read),
        ("pttl", read),
        ("mget", read),
        ("mset", write),
        ("dbsize", read),
        ("ping", open),
        ("echo", read),
        ("hello", open),
        ("auth", open),
        ("select", read),
        ("quit", open),
        ("reset", open),
        ("client", read),
        ("command", read),
        ("info", read),
        ("config", admin),
        ("cluster", read),
        ("readonly", read),
        ("readwrite", read),
    ];
    let table: Vec<&str> = super::commands::COMMANDS.iter().map(|s| s.name).collect();
    let decided: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(table, decided, "a command was added: decide its role here");
    for (name, access) in expected {
        let spec = super::commands::lookup(name.as_bytes()).expect("in the table");
        assert_eq!(
            super::commands::access(spec, &[Bytes::from(name)]).0,
            access,
            "{name}"
        );
    }
    // Any command that writes a key needs readwrite at least.
    for spec in super::commands::COMMANDS {
        if spec.flags.contains(&"write") {
            assert!(
                super::commands::access(spec, &[]).0 >= write,
                "{}",
                spec.name
            );
        }
    }
    let config = super::commands::lookup(b"config").expect("config");
    let get = [Bytes::from("config"), Bytes::from("GET"), Bytes::from("*")];
    assert_eq!(super::commands::access(config, &get).0, read);
}
