//! Leader election: the decision reads only this candidate's own clock (table tests with
//! an injected clock), and a Lease released on shutdown is taken at once (against a
//! stateful mock of the Lease API that checks resourceVersions like kube-apiserver).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;

fn held_by(holder: &str, renewed: &str, version: &str) -> Record {
    let renewed: Timestamp = renewed.parse().unwrap();
    Record {
        spec: LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renewed - 1.hour())),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        },
        resource_version: Some(version.to_owned()),
    }
}

/// Feeds `reads` (seconds after the first read on the candidate's clock, the record
/// read) to one candidate `a` and checks each decision.
fn check(case: &str, reads: &[(u64, Record, Decision)]) {
    let start = Instant::now();
    let mut observer = Observer::default();
    for (i, (at, record, expected)) in reads.iter().enumerate() {
        let decision = observer.decide(record.clone(), "a", start + Duration::from_secs(*at));
        assert_eq!(&decision, expected, "{case}: read {i} at +{at}s");
    }
}

fn wait(holder: &str) -> Decision {
    Decision::Wait {
        holder: holder.to_owned(),
    }
}

const TAKE: Decision = Decision::Write {
    transitions: 4,
    renew: false,
};

#[test]
fn only_the_candidates_own_clock_decides() {
    // The wall clock of the machine these tests run on does not matter either: the
    // times in the records are hours away from any "now" and from each other.
    let long_ago = "2001-01-01T00:00:00Z";
    let far_ahead = "2099-01-01T00:00:00Z";
    check(
        "a holder whose clock is behind is not deposed on first sight",
        &[
            (0, held_by("b", long_ago, "7"), wait("b")),
            (14, held_by("b", long_ago, "7"), wait("b")),
            (15, held_by("b", long_ago, "7"), TAKE),
        ],
    );
    check(
        "a holder whose clock is ahead is deposed once it stops renewing",
        &[
            (0, held_by("b", far_ahead, "7"), wait("b")),
            (15, held_by("b", far_ahead, "7"), TAKE),
        ],
    );
    check(
        "a holder that keeps renewing keeps the lease, whatever its times say",
        &[
            (0, held_by("b", long_ago, "7"), wait("b")),
            (10, held_by("b", long_ago, "8"), wait("b")),
            (20, held_by("b", long_ago, "9"), wait("b")),
            (30, held_by("b", long_ago, "10"), wait("b")),
            (44, held_by("b", long_ago, "10"), wait("b")),
            (45, held_by("b", long_ago, "10"), TAKE),
        ],
    );
    check(
        "any change of the record counts, even one that moves a time backwards",
        &[
            (0, held_by("b", far_ahead, "7"), wait("b")),
            (10, held_by("b", long_ago, "7"), wait("b")),
            (24, held_by("b", long_ago, "7"), wait("b")),
            (25, held_by("b", long_ago, "7"), TAKE),
        ],
    );
    let mut slow = held_by("b", long_ago, "7");
    slow.spec.lease_duration_seconds = Some(40);
    check(
        "the duration the holder announced is the one waited",
        &[
            (0, slow.clone(), wait("b")),
            (39, slow.clone(), wait("b")),
            (40, slow, TAKE),
        ],
    );
    check(
        "its own lease is renewed, keeping the transition count",
        &[(
            0,
            held_by("a", long_ago, "7"),
            Decision::Write {
                transitions: 3,
                renew: true,
            },
        )],
    );
    let mut released = held_by("b", far_ahead, "7");
    released.spec.holder_identity = Some(String::new());
    check("a released lease is taken at once", &[(0, released, TAKE)]);
    check(
        "a lease never held is taken at once",
        &[(
            0,
            Record::default(),
            Decision::Write {
                transitions: 1,
                renew: false,
            },
        )],
    );
}

/// One Lease in a mock API server that behaves like kube-apiserver where it matters:
/// create refuses an existing object, update refuses a stale resourceVersion.
type Stored = Arc<Mutex<Option<Value>>>;

async fn mock_lease_api() -> (Client, Stored) {
    let stored: Stored = Arc::default();
    let app = Router::new()
        .fallback(
            |State(stored): State<Stored>, request: Request| async move {
                let method = request.method().as_str().to_owned();
                let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let (status, body) = answer(&stored, &method, &body);
                (
                    status,
                    [("content-type", "application/json")],
                    body.to_string(),
                )
                    .into_response()
            },
        )
        .with_state(stored.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (Client::try_from(config).unwrap(), stored)
}

fn answer(stored: &Stored, method: &str, body: &[u8]) -> (StatusCode, Value) {
    let refusal = |code: StatusCode, reason: &str| {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "message": reason, "code": code.as_u16()});
        (code, status)
    };
    let mut stored = stored.lock();
    let version = |lease: &Value| {
        lease["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned)
    };
    match (method, stored.as_ref()) {
        ("GET", Some(lease)) => (StatusCode::OK, lease.clone()),
        ("GET", None) => refusal(StatusCode::NOT_FOUND, "NotFound"),
        ("POST", Some(_)) => refusal(StatusCode::CONFLICT, "AlreadyExists"),
        ("PUT", None) => refusal(StatusCode::NOT_FOUND, "NotFound"),
        ("PUT", Some(lease))
            if version(lease) != version(&serde_json::from_slice(body).unwrap()) =>
        {
            refusal(StatusCode::CONFLICT, "Conflict")
        }
        ("POST" | "PUT", current) => {
            let next = current
                .and_then(version)
                .map_or(1, |v| v.parse::<u64>().unwrap() + 1);
            let mut lease: Value = serde_json::from_slice(body).unwrap();
            lease["metadata"]["resourceVersion"] = json!(next.to_string());
            *stored = Some(lease.clone());
            (StatusCode::OK, lease)
        }
        _ => refusal(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
    }
}

fn spec_of(stored: &Stored) -> LeaseSpec {
    let lease: Lease = serde_json::from_value(stored.lock().clone().unwrap()).unwrap();
    lease.spec.unwrap()
}

#[tokio::test]
async fn a_leader_that_stops_releases_and_a_standby_takes_over_at_once() {
    let (client, stored) = mock_lease_api().await;
    let a = LeaderElection::new(client.clone(), "ops", "kache", "a");
    let b = LeaderElection::new(client, "ops", "kache", "b");
    assert_eq!(a.try_acquire().await.unwrap(), Attempt::Leading);
    assert_eq!(
        b.try_acquire().await.unwrap(),
        Attempt::HeldBy("a".to_owned())
    );

    // The operator's work ends (shutdown): the leader releases on its way out.
    a.run_while_leading(async {}).await.unwrap();
    let released = spec_of(&stored);
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert_eq!(released.lease_transitions, Some(0), "kept");

    // b saw `a` hold it a moment ago, and takes it without waiting out 15 s.
    assert_eq!(b.try_acquire().await.unwrap(), Attempt::Leading);
    let taken = spec_of(&stored);
    assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    assert_eq!(taken.lease_duration_seconds, Some(15));
    assert_eq!(taken.lease_transitions, Some(1));
    // And `a`, a candidate again, waits.
    assert_eq!(
        a.try_acquire().await.unwrap(),
        Attempt::HeldBy("b".to_owned())
    );
}

#[tokio::test]
async fn only_the_holder_releases() {
    let (client, stored) = mock_lease_api().await;
    let a = LeaderElection::new(client.clone(), "ops", "kache", "a");
    let b = LeaderElection::new(client, "ops", "kache", "b");
    assert!(!a.release().await.unwrap(), "no lease yet");
    assert_eq!(a.try_acquire().await.unwrap(), Attempt::Leading);
    assert!(!b.release().await.unwrap());
    assert_eq!(spec_of(&stored).holder_identity.as_deref(), Some("a"));
    assert!(a.release().await.unwrap());
    assert_eq!(spec_of(&stored).holder_identity, None);
}

#[tokio::test]
async fn a_renewal_keeps_the_acquire_time_and_changes_the_record() {
    let (client, stored) = mock_lease_api().await;
    let a = LeaderElection::new(client, "ops", "kache", "a");
    assert_eq!(a.try_acquire().await.unwrap(), Attempt::Leading);
    let first = spec_of(&stored);
    let version = stored.lock().as_ref().unwrap()["metadata"]["resourceVersion"].clone();
    assert_eq!(a.try_acquire().await.unwrap(), Attempt::Leading);
    let renewed = spec_of(&stored);
    assert_eq!(renewed.acquire_time, first.acquire_time);
    assert_eq!(renewed.lease_transitions, first.lease_transitions);
    assert_ne!(
        stored.lock().as_ref().unwrap()["metadata"]["resourceVersion"],
        version,
        "a standby sees the renewal as a change"
    );
}
