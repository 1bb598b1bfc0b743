//! A lean connection against scripted servers: answers complete their own calls in any
//! order, a broken connection fails every call in flight with `UNAVAILABLE` and stays
//! closed, a server that does not echo the preface refuses, and calls beyond the
//! in-flight bound wait instead of queueing.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::*;
use crate::cluster::wire::proto;

const MAX: usize = 1 << 20;

/// A server that accepts one connection, echoes the preface, and hands the stream to
/// `script`.
async fn scripted<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut preface = [0; PREFACE_LEN];
        stream.read_exact(&mut preface).await.expect("preface");
        stream.write_all(&preface).await.expect("echo");
        script(stream).await;
    });
    address
}

/// Reads frames until `count` requests have arrived.
async fn requests(stream: &mut TcpStream, count: usize) -> Vec<frame::Frame> {
    let mut inbox = BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < count {
        while let Some(frame) = frame::decode(&mut inbox, MAX).expect("frames") {
            if frame.kind != Kind::Ping {
                frames.push(frame);
            }
        }
        if frames.len() < count {
            assert_ne!(stream.read_buf(&mut inbox).await.expect("read"), 0);
        }
    }
    frames
}

fn get(key: &[u8]) -> proto::GetRequest {
    proto::GetRequest {
        sender: None,
        key: key.to_vec(),
        request_id: String::new(),
    }
}

/// A reply naming the key it answers (in the record), so a mix-up shows.
fn reply_for(request: &frame::Frame) -> proto::GetResponse {
    let request: proto::GetRequest = Message::decode(request.body.clone()).expect("request");
    proto::GetResponse {
        record: Some(proto::Record {
            key: request.key,
            ..proto::Record::default()
        }),
        authoritative: true,
        wall_ms: 0,
    }
}

#[tokio::test]
async fn answers_complete_their_own_calls_in_any_order() {
    let address = scripted(|mut stream| async move {
        let asked = requests(&mut stream, 3).await;
        let mut out = BytesMut::new();
        for request in asked.iter().rev() {
            frame::encode(&mut out, request.id, Kind::Reply, &reply_for(request));
        }
        stream.write_all(&out).await.expect("answers");
        // Keep the connection open while the calls read their answers.
        let _ = stream.read(&mut [0; 1]).await;
    })
    .await;
    let connection = Connection::open(address, MAX, None);
    let calls = ["x", "y", "z"].map(|key| {
        let connection = connection.clone();
        async move {
            let reply: proto::GetResponse = connection
                .call(Kind::Get, &get(key.as_bytes()))
                .await
                .expect("answered");
            reply.record.map(|r| r.key)
        }
    });
    let [x, y, z] = calls;
    let answers = tokio::join!(x, y, z);
    assert_eq!(
        answers,
        (
            Some(b"x".to_vec()),
            Some(b"y".to_vec()),
            Some(b"z".to_vec())
        )
    );
}

#[tokio::test]
async fn a_broken_connection_fails_the_calls_in_flight_and_stays_closed() {
    let address = scripted(|mut stream| async move {
        requests(&mut stream, 2).await;
        // Gone without an answer: the calls' outcome is unknown.
    })
    .await;
    let connection = Connection::open(address, MAX, None);
    let (x, y) = (get(b"x"), get(b"y"));
    let (first, second) = tokio::join!(
        connection.call::<proto::GetResponse>(Kind::Get, &x),
        connection.call::<proto::GetResponse>(Kind::Get, &y),
    );
    for failed in [first, second] {
        let Err(CallError::Status(status)) = failed else {
            panic!("a call in flight on a broken connection fails: {failed:?}");
        };
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            !crate::cluster::wire::is_syncing(&status),
            "unreachable, not 'no data'"
        );
    }
    assert!(connection.is_closed());
    assert!(!connection.is_refused());
    let later = connection
        .call::<proto::GetResponse>(Kind::Get, &get(b"z"))
        .await;
    assert!(
        matches!(&later, Err(CallError::Status(s)) if s.code() == tonic::Code::Unavailable),
        "{later:?}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_echo_the_preface_refuses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        // What an HTTP/2 server sends first: a SETTINGS frame.
        stream
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0])
            .await
            .expect("write");
        let _ = stream.read(&mut [0; 64]).await;
    });
    let connection = Connection::open(address, MAX, None);
    let refused = connection
        .call::<proto::GetResponse>(Kind::Get, &get(b"x"))
        .await;
    assert!(matches!(refused, Err(CallError::Refused)), "{refused:?}");
    assert!(connection.is_refused());

    let unreachable = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let failed = Connection::open(unreachable, MAX, None)
        .call::<proto::GetResponse>(Kind::Get, &get(b"x"))
        .await;
    assert!(
        matches!(&failed, Err(CallError::Status(s)) if s.code() == tonic::Code::Unavailable),
        "a peer that cannot be reached has not refused: {failed:?}"
    );
}

#[tokio::test]
async fn calls_beyond_the_bound_wait_for_a_place_and_time_out_like_grpc() {
    let address = scripted(|mut stream| async move {
        // Reads everything, answers nothing.
        let mut sink = vec![0; 64 << 10];
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let connection = Connection::open(address, MAX, None);
    let calls: Vec<_> = (0..MAX_IN_FLIGHT + 1)
        .map(|_| {
            let connection = connection.clone();
            tokio::spawn(async move {
                connection
                    .call::<proto::GetResponse>(Kind::Get, &get(b"x"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        connection.inner.calls.state.lock().waiting.len(),
        MAX_IN_FLIGHT,
        "one call waits for a place instead of being sent"
    );
    for call in calls {
        let timed_out = call.await.expect("join");
        let Err(CallError::Status(status)) = timed_out else {
            panic!("no answer within the timeout: {timed_out:?}");
        };
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert_eq!(status.message(), "Timeout expired");
    }
    assert!(
        connection.inner.calls.state.lock().waiting.is_empty(),
        "timed-out calls forget their ids"
    );
}
