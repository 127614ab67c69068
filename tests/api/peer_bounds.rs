//! What a connected peer may hold, from the outside: HTTP/1.1 headers are bounded like HTTP/2's
//! (431 past `--max-header-list-size`), an idle HTTP/2 connection that answers PINGs is closed at
//! `--idle-timeout`, a connection gets its GOAWAY at `--max-connection-age`, not at age + grace, and
//! streams left unfinished hold bounded memory (`--max-connection-buffer`, `--max-open-requests`),
//! and idle connections cannot hold every place under `--max-connections`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    support::{entire_session, eventually, open_chats_with_quota, spawn_with},
    support::{facade, serving},
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// Opens an HTTP/2 connection that makes no call and answers every PING; returns when the server
/// closes it: how long that took, and whether a GOAWAY came first.
async fn idle_h2_connection(addr: SocketAddr, within: Duration) -> (Duration, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(PREFACE).await.unwrap();
    stream
        .write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut goaway = false;
    let read = tokio::time::timeout(within, async {
        let mut head = [0u8; 9];
        while stream.read_exact(&mut head).await.is_ok() {
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; length];
            if stream.read_exact(&mut payload).await.is_err() {
                break;
            }
            match head[3] {
                GOAWAY => goaway = true,
                PING if head[4] & 1 == 0 => {
                    let mut ack = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    let _ = stream.write_all(&ack).await;
                }
                SETTINGS if head[4] & 1 == 0 => {
                    let _ = stream.write_all(&[0, 0, 0, SETTINGS, 1, 0, 0, 0, 0]).await;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "closed within {within:?}");
    (started.elapsed(), goaway)
}

#[tokio::test]
async fn an_idle_connection_answering_pings_is_closed_at_the_idle_timeout() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.idle_timeout = Duration::from_millis(600);
        c.peers.keepalive_interval = Duration::from_millis(100);
        c.telemetry.metrics_listen = Some(crate::support::loopback());
    })
    .await;
    let (after, goaway) = idle_h2_connection(app.addr, Duration::from_secs(5)).await;
    assert!(goaway, "a GOAWAY first");
    assert!(
        (Duration::from_millis(550)..Duration::from_millis(2_000)).contains(&after),
        "closed after {after:?}"
    );
    // The app's own client connection may be idle long enough too: at least this one counted.
    let closed = crate::support::series_value(
        &app.scrape().await,
        r#"connect_facade_connections_closed_total{listener="grpc",reason="idle"}"#,
    );
    assert!(closed.is_some_and(|count| count >= 1.0), "{closed:?}");
    // A connection with calls is not idle: the app's own client keeps calling through it.
    for _ in 0..4 {
        assert!(app.call(entire_session()).await.is_ok());
        // A fixed sleep: paces calls across the idle timeout, which they must keep from firing.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn idle_connections_answering_pings_give_up_their_places_to_callers_at_the_cap() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.max_connections = 4;
        c.peers.evict_idle_after = Duration::from_millis(300);
        c.peers.keepalive_interval = Duration::from_millis(100);
        c.telemetry.metrics_listen = Some(crate::support::loopback());
    })
    .await;
    app.call(entire_session())
        .await
        .expect("the app's own client");
    // Three idle peers answering every PING take the other three places (the app's client holds
    // the fourth), for longer than the idle timeout (5 minutes) would take to free them.
    let peers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(idle_h2_connection(app.addr, Duration::from_secs(20))))
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Every caller on a new connection is served, and keeps it: each takes the place of the
    // connection idle the longest (the app's own client, then the peers), none of another caller.
    let mut callers = Vec::new();
    for n in 0..4 {
        let mut caller = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .map(connect_facade::proto::contact_service_client::ContactServiceClient::new)
            .unwrap_or_else(|error| panic!("caller {n} connects: {error}"));
        let answer = caller
            .create_persistent_contact_association(entire_session())
            .await;
        assert!(answer.is_ok(), "caller {n}: {answer:?}");
        callers.push(caller);
    }
    for peer in peers {
        let (_, goaway) = peer.await.unwrap();
        assert!(goaway, "an evicted peer gets a GOAWAY first");
    }
    let metrics = app.scrape().await;
    let evicted = crate::support::series_value(
        &metrics,
        r#"connect_facade_connections_closed_total{listener="grpc",reason="evicted_idle"}"#,
    );
    assert_eq!(
        evicted,
        Some(4.0),
        "the three peers and the app's idle client"
    );
    assert_eq!(
        crate::support::series_value(
            &metrics,
            r#"connect_facade_connections_closed_total{listener="grpc",reason="cap"}"#,
        ),
        None,
        "no caller was turned away"
    );
}

#[tokio::test]
async fn a_connection_gets_its_goaway_at_its_age_not_after_the_grace() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |c| {
        c.peers.max_connection_age = Duration::from_millis(500);
        c.listening.shutdown_grace = Duration::from_secs(20);
    })
    .await;
    let (after, goaway) = idle_h2_connection(app.addr, Duration::from_secs(5)).await;
    assert!(goaway, "a GOAWAY first");
    assert!(
        after < Duration::from_millis(2_000),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn http1_headers_past_the_bound_are_431_and_unfinished_ones_hold_little_memory() {
    let app = spawn_with(open_chats_with_quota(100.0, 100), |_| {}).await;
    // 20 KiB of headers against the 16 KiB bound.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /amazonconnect.v1.ContactService/CreatePersistentContactAssociation HTTP/1.1\r\n\
         host: facade\r\nx-padding: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(app.call(entire_session()).await.is_ok(), "still serving");
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn two_hundred_fifty_peers_holding_unfinished_390_kb_headers_hold_little_memory() {
    let serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let pid = serving.child.id().unwrap();
    let before = status_kib(pid, "VmRSS:");
    let mut peers = Vec::new();
    for _ in 0..250 {
        let mut stream = TcpStream::connect(serving.addr).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nhost: facade\r\nx-padding: {}",
            "a".repeat(390 * 1024)
        );
        // The server stops reading (and answers 431) long before the whole head is written.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            stream.write_all(head.as_bytes()),
        )
        .await;
        peers.push(stream);
    }
    // A fixed sleep: lets the server read what it will of the heads before its memory is measured.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = status_kib(pid, "VmRSS:").saturating_sub(before);
    eprintln!("250 peers with unfinished 390 KB headers: RSS +{grown} KiB");
    // Before the bound: +62 MiB for 100 such peers, +141 MiB for 250.
    assert!(grown < 24 * 1024, "RSS grew {grown} KiB");
}

/// Streams left unfinished: on each of `connections` connections, `streams` gRPC calls whose
/// message announces `announced` bytes and sends `sent` of them. Keep the senders to keep them
/// open; each task answers the call's grpc-status, if it came within 5 s.
async fn unfinished_streams(
    addr: std::net::SocketAddr,
    connections: usize,
    streams: usize,
    (sent, announced): (usize, u32),
) -> (
    Vec<tokio::sync::mpsc::Sender<Result<hyper::body::Frame<bytes::Bytes>, tonic::Status>>>,
    tokio::task::JoinSet<Option<String>>,
) {
    let mut frame = vec![0];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.resize(sent, 0x0a);
    unfinished_bodies(
        addr,
        connections,
        streams,
        ("application/grpc", frame.into()),
    )
    .await
}

/// Streams left unfinished: on each of `connections` connections, `streams` calls in
/// `content_type` whose body so far is `first`.
async fn unfinished_bodies(
    addr: std::net::SocketAddr,
    connections: usize,
    streams: usize,
    (content_type, frame): (&'static str, bytes::Bytes),
) -> (
    Vec<tokio::sync::mpsc::Sender<Result<hyper::body::Frame<bytes::Bytes>, tonic::Status>>>,
    tokio::task::JoinSet<Option<String>>,
) {
    use http_body_util::StreamBody;
    use tower::{Service, ServiceExt};

    let mut senders = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let channel = crate::support::channel(addr).await;
        for _ in 0..streams {
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            sender
                .send(Ok(hyper::body::Frame::data(frame.clone())))
                .await
                .unwrap();
            senders.push(sender);
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
            let request = http::Request::builder()
                .method("POST")
                .uri(format!(
                    "http://{addr}/amazonconnect.v1.ContactService/CreatePersistentContactAssociation"
                ))
                .header("content-type", content_type)
                .header("te", "trailers")
                .body(tonic::body::Body::new(body))
                .unwrap();
            let mut channel = channel.clone();
            calls.spawn(async move {
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    channel.ready().await.unwrap().call(request),
                )
                .await;
                let response = answer.ok()?.ok()?;
                let status = response.headers().get("grpc-status")?;
                Some(status.to_str().unwrap().to_owned())
            });
        }
    }
    (senders, calls)
}

async fn still_serving(addr: std::net::SocketAddr) {
    let mut client = connect_facade::proto::contact_service_client::ContactServiceClient::new(
        crate::support::channel(addr).await,
    );
    assert!(
        client
            .create_persistent_contact_association(entire_session())
            .await
            .is_ok(),
        "still serving"
    );
}

#[tokio::test]
async fn sixteen_connections_of_256_unfinished_64_kib_streams_are_reset_within_the_bound() {
    let serving = serving(facade(&["serve", "--simulator", "--listen", "127.0.0.1:0"])).await;
    let pid = serving.child.id().unwrap();
    let before = status_kib(pid, "VmRSS:");
    // A gRPC frame announcing 65,531 bytes, 65,000 of them sent, the rest never.
    let (senders, mut calls) = unfinished_streams(serving.addr, 16, 256, (65_000, 65_531)).await;
    // Reset for their data, or (past 1,024 open streams) for holding the most of them: at least
    // half the connections, however long a loaded machine takes to deliver their data.
    let resets = || {
        serving
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("connection reset: "))
            .count()
    };
    let took = eventually("8 connections reset", Duration::from_secs(20), || {
        std::future::ready(resets() >= 8)
    })
    .await;
    let peak = status_kib(pid, "VmHWM:");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "16 x 256 unfinished 64 KiB streams: {} connections reset within {took:?}, peak RSS +{grown} KiB",
        resets()
    );
    drop(senders);
    calls.abort_all();
    // Before the bound: +31-37 MiB per connection (16 connections: over 500 MiB). Now each holds
    // at most its 1 MiB of request data, its 256 KiB window, and its streams' own state.
    assert!(grown < 128 * 1024, "peak RSS grew {grown} KiB");
    still_serving(serving.addr).await;
}

#[tokio::test]
async fn a_connection_reset_at_the_buffer_bound_is_logged_with_its_peer_and_its_streams_say_why() {
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--max-connection-buffer",
        "64KiB",
    ]))
    .await;
    // Four Connect calls on one connection, 30 KB of each body sent and the rest never: past 64 KiB.
    let body = bytes::Bytes::from(vec![b' '; 30_000]);
    let (senders, mut calls) =
        unfinished_bodies(serving.addr, 1, 4, ("application/json", body)).await;
    let lines = || serving.logs.lock().unwrap().clone();
    eventually(
        "the reset and its streams' lines",
        Duration::from_secs(10),
        || {
            let lines = lines();
            std::future::ready(
                lines.iter().any(|l| l.contains("connection reset: "))
                    && lines.iter().any(|l| l.contains("CONNECTION_RESET")),
            )
        },
    )
    .await;
    drop(senders);
    calls.abort_all();
    let lines = lines();
    let reset = lines
        .iter()
        .find(|l| l.contains("connection reset: "))
        .unwrap();
    assert!(reset.contains("\"peer\":\"127.0.0.1:"), "{reset}");
    assert!(reset.contains("--max-connection-buffer"), "{reset}");
    let cut: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("rpc finished") && l.contains("CONNECTION_RESET"))
        .collect();
    assert!(
        !cut.is_empty() && cut.iter().all(|l| l.contains("\"peer\":\"127.0.0.1:")),
        "{cut:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("MALFORMED_MESSAGE")),
        "a cut stream is not the caller's malformed message: {lines:#?}"
    );
    still_serving(serving.addr).await;
}

#[tokio::test]
async fn thirty_two_connections_of_256_barely_started_streams_are_bounded_by_the_open_requests() {
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--max-open-requests",
        "1024",
    ]))
    .await;
    let pid = serving.child.id().unwrap();
    let before = status_kib(pid, "VmRSS:");
    // 10 bytes of a 100-byte message each: no data bound is near, only the streams' own state.
    let (senders, mut calls) = unfinished_streams(serving.addr, 32, 256, (10, 100)).await;
    // A fixed sleep: the peak RSS is measured once the streams have been held for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = status_kib(pid, "VmHWM:").saturating_sub(before);
    eprintln!("32 x 256 barely started streams: peak RSS +{grown} KiB");
    drop(senders);
    let mut kept = 0;
    while let Some(answer) = calls.join_next().await {
        kept += usize::from(answer.unwrap().as_deref() == Some("4"));
    }
    eprintln!(
        "{kept} of 8192 held to their deadline; the rest refused or reset with their connection"
    );
    // 8,192 streams, at most 1,024 open at once: the rest refused on their headers, or reset with a
    // connection holding more than the newcomer's.
    assert!(kept <= 1024, "{kept} held");
    // Without the bound, +123 MiB (about 15 KiB a stream); with it, 1,024 streams' state, 32
    // connections and the refusals in passing.
    assert!(grown < 64 * 1024, "peak RSS grew {grown} KiB");
    still_serving(serving.addr).await;
}

#[tokio::test]
async fn a_full_open_requests_bound_resets_the_busiest_connection_for_a_normal_caller() {
    let serving = serving(facade(&[
        "serve",
        "--simulator",
        "--listen",
        "127.0.0.1:0",
        "--max-open-requests",
        "8",
    ]))
    .await;
    // One connection holds the whole bound with streams it never finishes.
    let (senders, mut calls) = unfinished_streams(serving.addr, 1, 8, (10, 100)).await;
    // A fixed sleep: the streams' headers reach the server; nothing tells the client they did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A normal caller on its own connection is served (it would be refused otherwise): the
    // attacker's connection makes room.
    still_serving(serving.addr).await;
    let reset_at = Instant::now();
    let mut ended = 0;
    while let Some(answer) = calls.join_next().await {
        ended += usize::from(answer.unwrap().is_none());
    }
    assert_eq!(ended, 8, "no answer: reset with the connection");
    assert!(
        reset_at.elapsed() < Duration::from_secs(2),
        "reset at once, not at the 10 s deadline"
    );
    drop(senders);
    let logs = serving.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains("it held the most of --max-open-requests"),
        "{logs}"
    );
}
