//! Running probes: HTTP status, HTTPS (a real TLS handshake, any certificate) and TCP
//! connect decide the result (real listeners on loopback),
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

/// A TLS server on loopback with a self-signed certificate for "kache.invalid" (not the
/// address probed: the probe does not verify), answering every request with `status`.
async fn serve_tls(status: &'static str) -> u16 {
    let signed = rcgen::generate_simple_self_signed(vec!["kache.invalid".to_owned()]).unwrap();
    let cert = signed.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signed.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut s) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    port
}

fn https(port: u16) -> Action {
    Action::Http {
        host: None,
        port,
        path: "/healthz".into(),
        https: true,
        headers: vec![],
    }
}

#[tokio::test]
async fn https_speaks_tls_and_the_status_decides() {
    let ok = serve_tls("200 OK").await;
    assert_eq!(check(&https(ok), &target()).await, Ok(()));
    let bad = serve_tls("503 Service Unavailable").await;
    let err = check(&https(bad), &target()).await.unwrap_err();
    assert!(err.contains("503"), "{err}");
    // A port that accepts but does not speak TLS fails, as it does for the kubelet.
    let plain = serve_once("200 OK").await;
    let err = check(&https(plain), &target()).await.unwrap_err();
    assert!(err.contains("TLS"), "{err}");
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
