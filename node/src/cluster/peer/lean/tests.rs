//! The lean transport end to end, on the shared peer port of a real node: it answers what
//! gRPC answers on the same port (errors included), gRPC still works beside it, a peer
//! without it is reached over gRPC, and garbage or an oversized frame closes only the
//! connection that sent it.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::frame::{self, Kind};
use super::{CallError, Connection, LeanServer};
use crate::cluster::discovery::Discovery;
use crate::cluster::membership::Member;
use crate::cluster::peer::{PeerClients, PeerService, incoming, server};
use crate::cluster::wire::{Identity, proto, proto::peer_client::PeerClient};
use crate::cluster::{Cluster, Consistency, Defaults};
use crate::store::{EvictionPolicy, Precondition, Store, StoreConfig};

/// A single node holding `a = 1`, serving the peer port with both transports (or, with
/// `lean` false, gRPC alone, like a node without this transport).
async fn node(lean: bool) -> (Store, SocketAddr, usize) {
    serve(lean, std::future::pending()).await
}

/// Like [`node`], with the sender that shuts the peer server down.
async fn stoppable(lean: bool) -> (SocketAddr, usize, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_, address, max) = serve(lean, async move {
        let _ = stopped.await;
    })
    .await;
    (address, max, stop)
}

async fn serve(
    lean: bool,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> (Store, SocketAddr, usize) {
    let store = Store::new(StoreConfig::for_tests(
        "a",
        4,
        16 << 20,
        EvictionPolicy::Lru,
    ));
    store
        .put(b"a", b"1", None, &Precondition::None)
        .expect("put");
    let defaults = Defaults {
        read: Consistency::One,
        write: Consistency::One,
    };
    let cluster = Cluster::single(store.clone(), Identity::new("a".into()), defaults);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = PeerService::new(cluster);
    let max_message = service.max_message();
    let grpc = server::transport().add_service(service.clone().into_server());
    if lean {
        let port = incoming(listener, LeanServer::new(service), None);
        tokio::spawn(grpc.serve_with_incoming_shutdown(port, stopped));
    } else {
        tokio::spawn(grpc.serve_with_incoming_shutdown(server::incoming(listener), stopped));
    }
    (store, address, max_message)
}

fn sender() -> proto::Sender {
    Identity::new("b".into()).sender(1, 1, crate::clock::wall_ms())
}

fn get(key: &[u8]) -> proto::GetRequest {
    proto::GetRequest {
        sender: Some(sender()),
        key: key.to_vec(),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn lean_and_grpc_answer_alike_on_one_port() {
    let (_store, address, max) = node(true).await;
    let lean = Connection::open(address, max, None);
    let mut grpc = PeerClient::connect(format!("http://{address}"))
        .await
        .expect("gRPC on the same port");

    let by_lean: proto::GetResponse = lean.call(Kind::Get, &get(b"a")).await.expect("lean get");
    let by_grpc = grpc.get(get(b"a")).await.expect("grpc get").into_inner();
    assert_eq!(by_lean.record, by_grpc.record);
    assert_eq!(by_lean.record.map(|r| r.value), Some(b"1".to_vec()));
    assert!(by_lean.authoritative);

    let write = proto::ApplyRequest {
        sender: Some(sender()),
        records: vec![proto::Record {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
            hlc: 1 << 20,
            writer: 2,
            ..proto::Record::default()
        }],
        hint: false,
        request_id: String::new(),
    };
    let applied: proto::ApplyResponse = lean.call(Kind::Apply, &write).await.expect("apply");
    assert_eq!(applied.applied, 1);
    let again = grpc.apply(write).await.expect("grpc apply").into_inner();
    assert_eq!(
        (again.applied, again.stale),
        (1, 0),
        "the same version again is taken over either transport, never beaten by itself"
    );

    // A refusal carries the code and message gRPC gives.
    let anonymous = proto::GetRequest {
        sender: None,
        key: b"a".to_vec(),
        request_id: String::new(),
    };
    let Err(CallError::Status(by_lean)) =
        lean.call::<proto::GetResponse>(Kind::Get, &anonymous).await
    else {
        panic!("a request naming no sender is refused");
    };
    let by_grpc = grpc.get(anonymous).await.expect_err("refused");
    assert_eq!(by_lean.code(), by_grpc.code());
    assert_eq!(by_lean.message(), by_grpc.message());
    assert_eq!(by_lean.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_peer_without_the_lean_transport_is_reached_over_grpc() {
    let (_store, address, max) = node(false).await;
    let refused = Connection::open(address, max, None)
        .call::<proto::GetResponse>(Kind::Get, &get(b"a"))
        .await;
    assert!(matches!(refused, Err(CallError::Refused)), "{refused:?}");

    let discovery = Discovery::knowing(HashMap::from([("a".to_owned(), address)]));
    let peers = PeerClients::new(discovery, max);
    let member = Member {
        id: "a".into(),
        address: None,
    };
    let reply = peers.get(&member, get(b"a")).await.expect("over gRPC");
    assert_eq!(reply.record.map(|r| r.value), Some(b"1".to_vec()));
}

/// Opens a raw lean connection and exchanges the preface.
async fn raw(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(&frame::preface()).await.expect("preface");
    let mut echoed = [0; frame::PREFACE_LEN];
    stream.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(echoed, frame::preface());
    stream
}

/// Whether the server closed `stream` (rather than answering or waiting).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn garbage_or_an_oversized_frame_closes_only_its_connection() {
    let (_store, address, max) = node(true).await;
    let healthy = Connection::open(address, max, None);
    let _: proto::GetResponse = healthy.call(Kind::Get, &get(b"a")).await.expect("get");

    let mut garbage = raw(address).await;
    let mut unknown_kind = bytes::BytesMut::new();
    frame::encode(&mut unknown_kind, 1, Kind::Get, &get(b"a"));
    unknown_kind[12] = 0x42;
    garbage.write_all(&unknown_kind).await.expect("write");
    assert!(closed(&mut garbage).await, "an unknown kind closes it");

    let mut oversized = raw(address).await;
    let length = u32::try_from(max + 100).expect("fits");
    oversized
        .write_all(&length.to_be_bytes())
        .await
        .expect("write");
    assert!(closed(&mut oversized).await, "an oversized frame closes it");

    let mut reversed = raw(address).await;
    let mut reply = bytes::BytesMut::new();
    frame::encode_empty(&mut reply, 1, Kind::Pong);
    reversed.write_all(&reply).await.expect("write");
    assert!(
        closed(&mut reversed).await,
        "a server-to-client frame closes it"
    );

    let _: proto::GetResponse = healthy
        .call(Kind::Get, &get(b"a"))
        .await
        .expect("the other connection still serves");
    let mut grpc = PeerClient::connect(format!("http://{address}"))
        .await
        .expect("gRPC still accepted");
    grpc.get(get(b"a")).await.expect("grpc get");
}

#[tokio::test]
async fn a_request_body_that_is_not_the_message_is_internal_as_in_grpc() {
    let (_store, address, max) = node(true).await;
    let mut stream = raw(address).await;
    let mut request = bytes::BytesMut::new();
    frame::encode(&mut request, 9, Kind::Get, &get(b"a"));
    // Corrupt the body: a field tag with the wrong wire type.
    request[frame::HEADER_LEN] = 0x0f;
    stream.write_all(&request).await.expect("write");
    let mut inbox = bytes::BytesMut::new();
    let answer = loop {
        if let Some(frame) = frame::decode(&mut inbox, max).expect("frames") {
            break frame;
        }
        assert_ne!(stream.read_buf(&mut inbox).await.expect("read"), 0);
    };
    assert_eq!((answer.id, answer.kind), (9, Kind::Error));
    let status = frame::status_of(answer.body);
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message")
    );
}

#[tokio::test]
async fn a_peer_server_that_shuts_down_closes_its_lean_connections() {
    let (address, max, stop) = stoppable(true).await;
    let connection = Connection::open(address, max, None);
    let _: proto::GetResponse = connection.call(Kind::Get, &get(b"a")).await.expect("get");
    stop.send(()).expect("server running");
    crate::test_support::eventually("the connection closes", || connection.is_closed()).await;
    assert!(!connection.is_refused(), "closed, not refused");
    let after = connection
        .call::<proto::GetResponse>(Kind::Get, &get(b"a"))
        .await;
    assert!(
        matches!(&after, Err(CallError::Status(s)) if s.code() == tonic::Code::Unavailable),
        "{after:?}"
    );
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the port stopped accepting"
    );
}
