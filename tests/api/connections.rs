//! What a connection may cost before it calls: a silent socket is closed at the handshake deadline,
//! connections past the cap are refused while open ones keep working, and a process out of
//! descriptors neither spins nor stops listening (the real binary under a low `ulimit -n`).

use std::time::{Duration, Instant};

use connect_facade::proto::contact_service_client::ContactServiceClient;
use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic::transport::Channel;

use crate::{
    support::{Serving, facade_with_open_files, serving},
    support::{channel, entire_session, loopback, open_chats_with_quota, series_value, spawn_with},
};

/// Reads until the server closes the connection; how long that took.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let read = tokio::time::timeout(within, stream.read(&mut [0; 64]))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not {read:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_connection_that_never_sends_the_preface_is_closed_at_the_handshake_deadline() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.handshake_timeout = Duration::from_millis(300);
        c.telemetry.metrics_listen = Some(loopback());
    })
    .await;
    let silent = TcpStream::connect(app.addr).await.unwrap();
    let after = closed_by_server(silent, Duration::from_secs(3)).await;
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}"
    );
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_connections_closed_total{listener="grpc",reason="handshake_timeout"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    app.call(entire_session())
        .await
        .expect("a caller that speaks is served");
}

#[tokio::test]
async fn past_the_cap_new_connections_are_closed_while_open_ones_keep_working() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.max_connections = 2;
        // No connection gives up its place: the newcomers are turned away (peer_bounds.rs has the
        // idle connections that do).
        c.peers.evict_idle_after = Duration::ZERO;
        c.telemetry.metrics_listen = Some(loopback());
    })
    .await;
    // The test app's own client holds the first connection.
    let mut second = ContactServiceClient::new(channel(app.addr).await);
    let third = TcpStream::connect(app.addr).await.unwrap();
    let after = closed_by_server(third, Duration::from_secs(2)).await;
    assert!(after < Duration::from_millis(500), "closed after {after:?}");
    let mut refused = ContactServiceClient::new(
        Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect_lazy(),
    );
    let status = refused
        .create_persistent_contact_association(entire_session())
        .await
        .expect_err("no place for a third connection");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    app.call(entire_session())
        .await
        .expect("the first still works");
    second
        .create_persistent_contact_association(entire_session())
        .await
        .expect("the second still works");
    let metrics = app.scrape().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_open_connections{listener="grpc"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"connect_facade_connections_closed_total{listener="grpc",reason="cap"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
}

/// User and system CPU seconds `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

#[tokio::test]
async fn out_of_descriptors_the_listener_neither_spins_nor_stops() {
    // `ulimit -n` sets the hard limit too, so the facade cannot raise it.
    let Serving { child, addr, logs } = serving(facade_with_open_files(
        48,
        &[
            "serve",
            "--simulator",
            "--listen",
            "127.0.0.1:0",
            "--handshake-timeout",
            "60s",
        ],
    ))
    .await;
    let pid = child.id().expect("running");
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("open files limit") && line.contains("48")),
        "the limit is logged"
    );
    // More silent connections than descriptors: the kernel completes them, the facade cannot accept.
    let mut silent = Vec::new();
    for _ in 0..80 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A fixed sleep: the accept loop has no event to wait for; half a second lets it meet the full table first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(pid);
    // A fixed sleep: the CPU spent is measured over this one-second window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_seconds(pid) - before;
    assert!(
        spent < 0.3,
        "{spent:.2} s of CPU in 1 s out of descriptors: spinning"
    );
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("out of descriptors")),
        "the shortage is logged"
    );
    drop(silent);
    let freed = Instant::now();
    loop {
        let answered = match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => ContactServiceClient::new(channel)
                .create_persistent_contact_association(entire_session())
                .await
                .is_ok(),
            Err(_) => false,
        };
        if answered {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "served again once descriptors are free"
        );
        // Polls its condition (served again), bounded above.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(child);
}
