//! Client connections: from accept to close.
//!
//! ```text
//!   accept ─► login::run (startup, auth, welcome) ─► session::run (pooling loop) ─► close
//!                  └─ CancelRequest ─► cancel::route
//! ```
//!
//! [`login`] speaks to the client until ReadyForQuery; [`session`] then forwards traffic,
//! attaching and releasing server connections as [`crate::protocol::session`] allows.

pub mod login;
pub mod params;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;

use crate::buffer::ReadBuf;
use crate::error::{Fault, SessionError};
use crate::net::Stream;
use crate::protocol::sqlstate;
use crate::shard::Shard;

/// The largest message read whole from a client during login (passwords, SASL).
pub(crate) const LOGIN_CEILING: usize = 64 * 1024;

/// Where a client came from, for logs and (later) hba rules.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix-socket client, with its OS user id when the kernel said (SO_PEERCRED).
    Unix {
        uid: Option<u32>,
    },
    /// The kernel could not say (the client left right after connecting).
    Unknown,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { .. } => f.write_str("unix"),
            Peer::Unknown => f.write_str("unknown peer"),
        }
    }
}

/// A client's socket and read buffer.
pub struct ClientConn {
    pub stream: Stream,
    pub rbuf: ReadBuf,
    pub peer: Peer,
}

impl ClientConn {
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(SessionError::client_io)?;
        // A TLS session may keep records it could not write yet: push them out before
        // the next read waits for an answer. Plain sockets have nothing to flush.
        if self.stream.is_tls() {
            self.stream.flush().await.map_err(SessionError::client_io)?;
        }
        Ok(())
    }

    /// Sends a FATAL error (best effort: the client may be gone) and closes.
    pub async fn send_fatal(&mut self, error: &SessionError) {
        if !error.client_reachable() {
            return;
        }
        let mut out = BytesMut::new();
        error.encode_fatal(&mut out);
        if self.stream.write_all(&out).await.is_err() {
            return;
        }
        self.linger().await;
    }

    /// Closes without losing what was just sent: half-close, then read and discard what
    /// the client still sends for a moment, so that the kernel does not answer unread
    /// input with a reset that could destroy the error message in flight.
    pub async fn linger(&mut self) {
        if self.stream.shutdown_write().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 512];
        let _ = crate::timeout::with_timeout(std::time::Duration::from_millis(250), async {
            while let Ok(n) = futures_lite::AsyncReadExt::read(&mut self.stream, &mut scratch).await
            {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Counts a client against `max_client_conn` for as long as it lives.
pub(super) struct ClientSlot(Rc<Shard>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.shared.release_client();
    }
}

/// A logged-in client's session, ready to run (it owns everything it needs).
type SessionFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Serves one accepted connection to the end.
///
/// The task's own future stays a few words: the login (large: TLS, SCRAM, the welcome)
/// runs boxed and is freed when it ends, and the session it hands over is boxed too, at
/// the size an idle client keeps for as long as it is connected. The login is boxed
/// before the `async move` block so that the block captures one pointer: what a future
/// captures keeps its place for the future's whole life, and the stream and peer
/// captured by value would stay in the task (about 170 bytes) long after the login took
/// them.
pub fn serve(shard: Rc<Shard>, stream: Stream, peer: Peer) -> impl Future<Output = ()> {
    let login = Box::pin(log_in(shard, stream, peer));
    async move {
        if let Some(session) = login.await {
            session.await;
        }
    }
}

/// Admits the client and runs its login; on success, the session to run.
async fn log_in(shard: Rc<Shard>, stream: Stream, peer: Peer) -> Option<SessionFuture> {
    let mut conn = ClientConn {
        stream,
        rbuf: ReadBuf::new(0, LOGIN_CEILING),
        peer,
    };
    let config = shard.config();
    // Over max_client_conn the client is still read up to its startup packet, so that the
    // refusal answers the startup (libpq drops errors sent in answer to SSLRequest) and
    // cancel requests still get through.
    let admitted = shard.shared.admit_client(config.pooler.max_client_conn);
    let slot = admitted.then(|| ClientSlot(shard.clone()));
    let login = crate::timeout::with_timeout(
        config.pooler.client_login_timeout,
        login::run(&shard, &mut conn, admitted),
    )
    .await;
    let login = match login {
        None => {
            let err = SessionError::new(
                Fault::Client,
                sqlstate::PROTOCOL_VIOLATION,
                "client_login_timeout: the login did not finish in time",
            );
            conn.send_fatal(&err).await;
            return None;
        }
        Some(Err(err)) => {
            if config.pooler.log_pooler_errors && err.client_reachable() {
                log::warn!("{}: login failed: {err}", conn.peer);
            }
            conn.send_fatal(&err).await;
            return None;
        }
        Some(Ok(login::Outcome::Cancel(key))) => {
            crate::cancel::route(&shard, key).await;
            return None;
        }
        Some(Ok(login::Outcome::Ready(session))) => session,
    };
    Some(Box::pin(session::run(shard, conn, login, slot)))
}
