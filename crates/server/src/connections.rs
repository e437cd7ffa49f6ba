//! Accepting connections so that nobody without a key can starve a server: a cap on open
//! connections, a deadline for a new connection's first bytes, an idle timeout, and an accept
//! loop that backs off when the process runs out of file descriptors instead of spinning.
//!
//! The API key is checked per call, so a client that never makes a call is never refused by it:
//! a flood of idle TCP connections used to hold every descriptor and leave no room for real
//! clients. Here, when the cap is reached, the oldest connection that has not yet sent its
//! handshake (the TLS hello or the HTTP/2 preface, within `handshake_timeout`) is closed to make
//! room; a real client sends its handshake at once and is never the one evicted. Only when every
//! open connection has completed its handshake is the new one refused.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::invalid::{Invalid, ensure, positive};

/// Bytes a connection must send before it counts as established: the HTTP/2 client preface is 24
/// bytes, a TLS ClientHello more.
const HANDSHAKE_BYTES: usize = 24;

/// What a server accepts; `[connections]` in every service's config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Open connections at most (keep it below the process's file-descriptor limit).
    pub max_connections: usize,
    /// A new connection must send its handshake within this.
    #[serde(with = "crate::duration::millis")]
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (HTTP/2 keepalive pings, answered
    /// by every live client, count as traffic).
    #[serde(with = "crate::duration::millis")]
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this much silence, and the connection closed when it is
    /// not answered within `keepalive_timeout`.
    #[serde(with = "crate::duration::millis")]
    pub keepalive_interval: Duration,
    #[serde(with = "crate::duration::millis")]
    pub keepalive_timeout: Duration,
    /// Concurrent calls on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 768,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
        }
    }
}

impl ConnectionLimits {
    /// Keys are named within the `connections` table.
    pub fn validate(&self) -> Result<(), Invalid> {
        positive(&[
            ("max_connections", self.max_connections as u64),
            ("max_concurrent_streams", u64::from(self.max_concurrent_streams)),
        ])?;
        for (key, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            ensure(!d.is_zero(), key, || "must be positive".into())?;
        }
        Ok(())
    }
}

/// One open connection as the tracker sees it.
#[derive(Debug, Default)]
struct Slot {
    established: AtomicBool,
    evict: CancellationToken,
}

/// The open connections of one listener.
#[derive(Debug, Default)]
struct Tracker {
    open: AtomicUsize,
    /// Connections in the order they were accepted, while they may still be silent.
    silent: Mutex<VecDeque<Weak<Slot>>>,
    evicted: AtomicUsize,
    refused: AtomicUsize,
}

impl Tracker {
    fn register(&self, max: usize) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        let mut silent = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        if silent.len() > 2 * max {
            silent.retain(|w| w.upgrade().is_some_and(|s| !s.established.load(Ordering::Relaxed)));
        }
        silent.push_back(Arc::downgrade(&slot));
        self.open.fetch_add(1, Ordering::AcqRel);
        slot
    }

    /// Closes the oldest connection still without a handshake; false when there is none.
    fn evict_oldest_silent(&self) -> bool {
        let mut silent = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(weak) = silent.pop_front() {
            if let Some(slot) = weak.upgrade()
                && !slot.established.load(Ordering::Acquire)
                && !slot.evict.is_cancelled()
            {
                slot.evict.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

/// A TCP connection under the limits: its reads fail once its deadline passes or it is evicted,
/// which ends the connection; dropping it frees its place.
pub struct LimitedIo {
    stream: TcpStream,
    slot: Arc<Slot>,
    tracker: Arc<Tracker>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    received: usize,
}

impl std::fmt::Debug for LimitedIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedIo").field("received", &self.received).finish_non_exhaustive()
    }
}

impl Drop for LimitedIo {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connected for LimitedIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "evicted before its handshake")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.received = this.received.saturating_add(n);
                let established = this.received >= HANDSHAKE_BYTES;
                if established {
                    this.slot.established.store(true, Ordering::Release);
                }
                // Before the handshake the deadline stays put: trickling bytes does not extend it.
                if n > 0 && established {
                    this.deadline.as_mut().reset(Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let what = if this.received >= HANDSHAKE_BYTES { "idle" } else { "no handshake" };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts on `listener` under `limits`; the receiver is the server's incoming stream. The
/// accept loop ends when the receiver is dropped (the server stopped), closing the listener.
pub fn accept(listener: TcpListener, limits: ConnectionLimits) -> mpsc::Receiver<io::Result<LimitedIo>> {
    let (tx, rx) = mpsc::channel(16);
    let tracker = Arc::new(Tracker::default());
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        let mut last_report = Instant::now();
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => {
                    backoff = Duration::from_millis(5);
                    stream
                }
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) and the like: accepting again at once
                    // would only spin.
                    if last_report.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(error = %e, open = tracker.open.load(Ordering::Relaxed), "accept failed; backing off");
                        last_report = Instant::now();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if tracker.open.load(Ordering::Acquire) >= limits.max_connections && !tracker.evict_oldest_silent() {
                tracker.refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                let (evicted, refused) =
                    (tracker.evicted.swap(0, Ordering::Relaxed), tracker.refused.swap(0, Ordering::Relaxed));
                if evicted + refused > 0 {
                    tracing::warn!(evicted, refused, max = limits.max_connections, "connection limit reached");
                    last_report = Instant::now();
                }
            }
            let _ = stream.set_nodelay(true);
            let slot = tracker.register(limits.max_connections);
            let io = LimitedIo {
                stream,
                evicted: Box::pin(slot.evict.clone().cancelled_owned()),
                slot,
                tracker: tracker.clone(),
                deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
                idle_timeout: limits.idle_timeout,
                received: 0,
            };
            if tx.send(Ok(io)).await.is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncReadExt;

    use super::*;

    fn limits(max: usize, handshake_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            handshake_timeout: Duration::from_millis(handshake_ms),
            ..ConnectionLimits::default()
        }
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    #[tokio::test]
    async fn a_connection_without_a_handshake_is_closed_at_its_deadline() {
        let (l, addr) = listener().await;
        let mut rx = accept(l, limits(8, 200));
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut io = rx.recv().await.unwrap().unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_silent_connection_makes_room() {
        let (l, addr) = listener().await;
        let mut rx = accept(l, limits(2, 60_000));
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            accepted.push(rx.recv().await.unwrap().unwrap());
        }
        // A third connection: the first silent one is evicted, the new one accepted.
        clients.push(TcpStream::connect(addr).await.unwrap());
        let _third = rx.recv().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let err = accepted[0].read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn established_connections_are_never_evicted_and_the_newcomer_is_refused() {
        use tokio::io::AsyncWriteExt;
        let (l, addr) = listener().await;
        let mut rx = accept(l, limits(1, 60_000));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut io = rx.recv().await.unwrap().unwrap();
        client.write_all(&[0u8; HANDSHAKE_BYTES]).await.unwrap();
        let mut buf = [0u8; HANDSHAKE_BYTES];
        io.read_exact(&mut buf).await.unwrap();
        let mut late = TcpStream::connect(addr).await.unwrap();
        // Refused: the server closes it without handing it on.
        let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv()).await.is_err());
    }
}
