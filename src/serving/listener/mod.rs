//! What a connection may cost before it makes a call: the accept loop of the gRPC and metrics
//! listeners, which admits a connection only within bounds:
//!
//! - a cap on open connections (`--max-connections`), handshakes included: past it, the connection
//!   idle the longest is told to close (GOAWAY) and the newcomer admitted, or, none being idle,
//!   the newcomer is reset at once ([`crate::serving::activity`]);
//! - a handshake deadline (`--handshake-timeout`) for the TLS handshake and the first bytes;
//! - descriptors running out: logged once, counted, and accepting again after
//!   [`OUT_OF_DESCRIPTORS_PAUSE`] instead of spinning.
//!
//! hyper and tonic have no connection cap, preface timeout or accept back-off of their own, hence this
//! loop; the admitted connections are handed on as a stream. The reasoning: the book's "Designs".

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::serving::activity::Connections;

mod metrics;

pub(crate) use metrics::{CloseReason, ConnectionMetrics};

/// How many bytes a peer must send within the handshake deadline: the length of the HTTP/2 client
/// preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`); any HTTP/1.1 request line with its Host header is longer.
const FIRST_BYTES: usize = 24;

/// How long the accept loop rests when the process is out of descriptors (or the kernel out of
/// memory for sockets): long enough not to spin, short enough that a freed descriptor is used soon.
pub const OUT_OF_DESCRIPTORS_PAUSE: Duration = Duration::from_millis(100);

/// The bounds on one listener's connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionLimits {
    /// Connections open at once, handshakes included.
    pub max_connections: usize,
    /// Longest a connection may take to finish its handshake and send its first bytes.
    pub handshake_timeout: Duration,
    /// Whether a connection must send its first bytes before it is handed on (the metrics
    /// listener's HTTP/1.1 server has its own header timeout instead).
    pub await_first_bytes: bool,
    /// At the cap, a connection with no call for this long may give up its place (`None`: never).
    pub evict_idle_after: Option<Duration>,
}

impl AdmissionLimits {
    /// These limits, for good (a listener no reload changes).
    pub fn fixed(self) -> watch::Receiver<Self> {
        watch::channel(self).1
    }
}

/// Raises the soft limit on open files to the hard one, as most servers do (the soft default is often
/// 1,024, far below what the connection cap may need), and returns the limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Counts a listener's open connections: one [`OpenConnection`] per connection, dropped with it.
#[derive(Clone)]
struct OpenCount {
    listener: &'static str,
    open: Arc<AtomicUsize>,
    metrics: ConnectionMetrics,
}

impl OpenCount {
    /// Counts a new connection, unless the cap is reached.
    fn try_open(&self, max: usize) -> Option<OpenConnection> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        self.metrics.set_open(self.listener, open + 1);
        Some(OpenConnection(self.clone()))
    }

    /// Counts a new connection past the cap: one whose place another is giving up.
    fn open_in_place_of_another(&self) -> OpenConnection {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.set_open(self.listener, open);
        OpenConnection(self.clone())
    }
}

/// One open connection, counted until dropped.
struct OpenConnection(OpenCount);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let count = &self.0;
        let open = count.open.fetch_sub(1, Ordering::AcqRel) - 1;
        count.metrics.set_open(count.listener, open);
    }
}

/// Accepts on `listener` within `limits` (as they are when each connection arrives), runs `handshake` (TLS, or nothing) on each connection, and
/// yields the admitted ones. At the cap, the connection of `served` idle the longest gives up its
/// place, if any (`None`: the newcomer is reset). The loop ends, closing the listening socket,
/// when the stream is dropped.
pub fn admit<IO, H, F>(
    listener: TcpListener,
    name: &'static str,
    (limits, served): (watch::Receiver<AdmissionLimits>, Option<Connections>),
    metrics: ConnectionMetrics,
    handshake: H,
) -> ReceiverStream<io::Result<Admitted<IO>>>
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + Unpin + Send + 'static,
{
    let (admitted, stream) = mpsc::channel(64);
    let count = OpenCount {
        listener: name,
        open: Arc::new(AtomicUsize::new(0)),
        metrics: metrics.clone(),
    };
    metrics.set_open(name, 0);
    tokio::spawn(async move {
        let mut out_of_descriptors = false;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = admitted.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_out_of_descriptors(&error) => {
                    if !out_of_descriptors {
                        tracing::warn!(listener = name, %error, pause = ?OUT_OF_DESCRIPTORS_PAUSE, "cannot accept connections: out of descriptors; serving the open ones and retrying");
                        out_of_descriptors = true;
                    }
                    metrics.accept_error(name, "descriptors");
                    tokio::time::sleep(OUT_OF_DESCRIPTORS_PAUSE).await;
                    continue;
                }
                Err(error) => {
                    // A connection that failed before it was accepted (reset, aborted): its own affair.
                    tracing::debug!(listener = name, %error, "accept failed");
                    metrics.accept_error(name, "connection");
                    continue;
                }
            };
            if out_of_descriptors {
                tracing::info!(listener = name, "accepting connections again");
                out_of_descriptors = false;
            }
            // The limits in force now: a reload may have changed them since the last connection.
            let limits = *limits.borrow();
            let open = count.try_open(limits.max_connections).or_else(|| {
                let after = limits.evict_idle_after?;
                served
                    .as_ref()
                    .is_some_and(|served| served.evict_longest_idle(after))
                    .then(|| count.open_in_place_of_another())
            });
            let Some(open) = open else {
                metrics.closed(name, CloseReason::Cap);
                // A reset rather than a graceful close: gRPC clients read it as UNAVAILABLE, the
                // code they retry, where a connection closed before its HTTP/2 handshake is
                // CANCELLED. No TIME_WAIT is left behind either.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            };
            // Set on every connection: a response written while an earlier one is unacknowledged
            // would otherwise wait for that ACK (Nagle).
            let _ = stream.set_nodelay(true);
            let handshaking = handshake(stream);
            let admitted = admitted.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let ready = async {
                    let io = handshaking.await?;
                    if limits.await_first_bytes {
                        Prefixed::read_first_bytes(io).await
                    } else {
                        Ok(Prefixed::none(io))
                    }
                };
                match tokio::time::timeout(limits.handshake_timeout, ready).await {
                    Ok(Ok(io)) => {
                        let _ = admitted.send(Ok(Admitted { io, _open: open })).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(listener = name, %error, "handshake failed");
                        metrics.closed(name, CloseReason::HandshakeFailed);
                    }
                    Err(_) => metrics.closed(name, CloseReason::HandshakeTimeout),
                }
            });
        }
    });
    ReceiverStream::new(stream)
}

/// Out of descriptors or socket memory: accepting again at once would fail the same way.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// An admitted connection: its IO, with the first bytes read during the handshake put back in front,
/// counted as open until dropped.
pub struct Admitted<IO> {
    io: Prefixed<IO>,
    _open: OpenConnection,
}

impl<IO> Admitted<IO> {
    #[cfg(test)]
    pub fn get_ref(&self) -> &IO {
        &self.io.inner
    }
}

/// IO whose first bytes were read ahead (to see the peer send them in time) and are read again first.
struct Prefixed<IO> {
    prefix: [u8; FIRST_BYTES],
    len: usize,
    read: usize,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> Prefixed<IO> {
    fn none(inner: IO) -> Self {
        Self {
            prefix: [0; FIRST_BYTES],
            len: 0,
            read: 0,
            inner,
        }
    }

    async fn read_first_bytes(mut inner: IO) -> io::Result<Self> {
        let mut prefix = [0; FIRST_BYTES];
        inner.read_exact(&mut prefix).await?;
        Ok(Self {
            prefix,
            len: FIRST_BYTES,
            read: 0,
            inner,
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let io = &mut self.io;
        if io.read < io.len {
            let rest = &io.prefix[io.read..io.len];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            io.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut io.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io.inner).poll_shutdown(cx)
    }
}

/// The peer's address and, with TLS, its certificates, as tonic reads them from the IO.
impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn limits(max_connections: usize, handshake_timeout: Duration) -> AdmissionLimits {
        AdmissionLimits {
            max_connections,
            handshake_timeout,
            await_first_bytes: true,
            evict_idle_after: None,
        }
    }

    async fn plaintext(
        limits: AdmissionLimits,
    ) -> (
        std::net::SocketAddr,
        ReceiverStream<io::Result<Admitted<TcpStream>>>,
        Arc<crate::metrics::Exposition>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut registry = crate::metrics::MetricsRegistry::new();
        let metrics = ConnectionMetrics::register(&mut registry);
        let incoming = admit(
            listener,
            "grpc",
            (limits.fixed(), None),
            metrics,
            |stream| std::future::ready(Ok(stream)),
        );
        (addr, incoming, registry.into_exposition())
    }

    #[tokio::test]
    async fn an_admitted_connection_reads_its_first_bytes_again_and_has_tcp_nodelay() {
        let (addr, mut incoming, _) = plaintext(limits(10, Duration::from_secs(5))).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"more").await.unwrap();
        let mut admitted = incoming.next().await.unwrap().unwrap();
        assert!(admitted.get_ref().nodelay().unwrap());
        let mut read = vec![0; PREFACE.len() + 4];
        admitted.read_exact(&mut read).await.unwrap();
        assert_eq!(&read[..PREFACE.len()], PREFACE);
        assert_eq!(&read[PREFACE.len()..], b"more");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_the_deadline_and_counted() {
        let (addr, _incoming, metrics) = plaintext(limits(10, Duration::from_millis(200))).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut [0; 8]))
            .await
            .expect("closed before 2 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() >= Duration::from_millis(180));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"connect_facade_connections_closed_total{listener="grpc",reason="handshake_timeout"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_at_once_and_a_freed_place_is_reused() {
        let (addr, mut incoming, metrics) = plaintext(limits(1, Duration::from_secs(5))).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(PREFACE).await.unwrap();
        let admitted = incoming.next().await.unwrap().unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), second.read(&mut [0; 8]))
            .await
            .expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(metrics.render().contains(
            r#"connect_facade_connections_closed_total{listener="grpc",reason="cap"} 1"#
        ));
        drop(admitted);
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(PREFACE).await.unwrap();
        assert!(
            incoming.next().await.unwrap().is_ok(),
            "the place is free again"
        );
    }

    #[test]
    fn descriptors_running_out_is_told_from_a_connection_s_own_failure() {
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
