//! Running probes: HTTP status and TCP connect decide the result (real listeners on loopback),
//! a failing startup probe reports unhealthy after its threshold, and no probes means started
//! and ready (both on paused tokio time).

use super::*;
use tokio::net::TcpListener;

fn target() -> ProbeTarget {
    ProbeTarget {
        ip: Ipv4Addr::LOCALHOST,
        pid: 0,
        env: vec![],
        user: None,
    }
}

async fn serve_once(status: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    port
}

fn http(port: u16) -> Action {
    Action::Http {
        host: None,
        port,
        path: "/healthz".into(),
        https: false,
        headers: vec![],
    }
}

#[tokio::test]
async fn http_status_decides() {
    let ok = serve_once("204 No Content").await;
    assert_eq!(check(&http(ok), &target()).await, Ok(()));
    let redirect = serve_once("302 Found").await;
    assert_eq!(check(&http(redirect), &target()).await, Ok(()));
    let bad = serve_once("503 Service Unavailable").await;
    let err = check(&http(bad), &target()).await.unwrap_err();
    assert!(err.contains("503"), "{err}");
}

#[tokio::test]
async fn tcp_connect_decides() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        check(&Action::Tcp { host: None, port }, &target()).await,
        Ok(())
    );
    drop(listener);
    // A closed port refuses. The freed port number can be taken again at once by a test
    // running alongside, so a success may be that test's listener: try a few fresh ones.
    let mut refused = check(&Action::Tcp { host: None, port }, &target())
        .await
        .is_err();
    for _ in 0..5 {
        if refused {
            break;
        }
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        refused = check(&Action::Tcp { host: None, port }, &target())
            .await
            .is_err();
    }
    assert!(refused, "a closed port was reported open");
}

#[tokio::test(start_paused = true)]
async fn startup_failure_reports_unhealthy_after_threshold() {
    let probes = ContainerProbes {
        startup: Some(ProbeParams {
            kind: ProbeKind::Startup,
            action: Action::Invalid("nope".into()),
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace: Some(Duration::from_secs(1)),
        }),
        ..Default::default()
    };
    let (tx, mut rx) = mpsc::channel(8);
    let t0 = Instant::now();
    run(probes, target(), t0, tx).await;
    let ev = rx.recv().await.unwrap();
    assert_eq!(
        ev,
        ProbeEvent::Unhealthy {
            kind: ProbeKind::Startup,
            message: "nope".into(),
            grace: Some(Duration::from_secs(1)),
        }
    );
    // checks at 5 s, 7 s and 9 s: the third failure decides
    assert_eq!(t0.elapsed(), Duration::from_secs(9));
}

#[tokio::test(start_paused = true)]
async fn no_probes_means_started_and_ready() {
    let (tx, mut rx) = mpsc::channel(8);
    let task = tokio::spawn(run(
        ContainerProbes::default(),
        target(),
        Instant::now(),
        tx,
    ));
    assert_eq!(rx.recv().await, Some(ProbeEvent::Started));
    assert_eq!(
        rx.recv().await,
        Some(ProbeEvent::Ready(true, String::new()))
    );
    task.abort();
}
