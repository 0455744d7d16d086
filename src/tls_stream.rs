//! [`TlsStream`]: a client's TLS session, pgring being the TLS server, on rustls's
//! unbuffered API.
//!
//! Why not futures-rustls (which servers still use, see [`crate::server`]): a
//! `rustls::ServerConnection` keeps the ciphertext it receives in a buffer of its own that
//! reaches 4 KiB with the first record and is never given back, so every idle TLS client
//! would hold one. Here pgring owns the buffers, and each owns memory only while it holds
//! bytes:
//!
//! - `incoming`: ciphertext read from the socket and not yet processed (with the parts of
//!   a handshake message rustls is still assembling, which it keeps in place). A
//!   [`ReadBuf`]: a read that would wait borrows storage from the shard's spare list and
//!   gives it back when nothing came.
//! - `plain`: plaintext decrypted but not yet taken by the reader (a record is up to
//!   16 KiB, a reader's buffer may be smaller).
//! - `outgoing`: records encrypted and not yet sent. Given back once everything went out.
//!
//! An idle client therefore holds only rustls's session state (keys, the negotiated
//! parameters, its certificate).
//!
//! Alerts: when a handshake or a record fails, the alert rustls produces is written out
//! like any other record, waiting for the socket when it is full, before the error is
//! reported: a client refused for its certificate learns why (`certificate required`,
//! `unknown ca`) instead of seeing the connection drop.
//!
//! Limits: rustls refuses records over 16 KiB + 2 KiB and handshake messages over 64 KiB
//! by their announced length before reading them; pgring's buffers grow only while rustls
//! cannot make progress with what they hold, by doubling and never past [`INCOMING_CEILING`]
//! and [`OUTGOING_CEILING`], so a peer cannot make pgring allocate by announcing a length.
//! Garbage from the peer is a rustls error (and its alert), never a panic.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

use crate::buffer::{borrow_spare, return_spare, ReadBuf, INITIAL_READ_BUF};
use crate::net::Stream;

/// The largest record rustls accepts: a 5-byte header and 16 KiB of plaintext plus 2 KiB
/// of expansion.
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Ciphertext kept at most: a 64 KiB handshake message being assembled and the record
/// after it (rustls's own buffer has the same limit).
pub const INCOMING_CEILING: usize = 0xffff + MAX_RECORD;

/// Ciphertext waiting to be sent at most (a handshake flight with a large certificate
/// chain; application data stops at [`OUTGOING_HIGH_WATER`] plus one write).
pub const OUTGOING_CEILING: usize = 128 * 1024;

/// Above this much unsent ciphertext a write waits for the socket instead of encrypting
/// more.
const OUTGOING_HIGH_WATER: usize = 32 * 1024;

/// Plaintext encrypted per write call at most: one full record.
const MAX_WRITE: usize = 16 * 1024;

/// Bytes a record adds to its plaintext at most (header, TLS 1.2 explicit nonce or TLS
/// 1.3 content type, AEAD tag), with room to spare; a guess to size the buffer before
/// encrypting, rustls says the exact size when it is too small.
const RECORD_OVERHEAD: usize = 64;

/// A client's TLS session over its plain connection (`T` is a [`Stream::Plain`] in
/// pgring; tests use an in-memory pipe).
pub struct TlsStream<T = Stream> {
    conn: UnbufferedServerConnection,
    inner: T,
    incoming: ReadBuf,
    plain: ByteQueue,
    outgoing: ByteQueue,
    /// The client sent close_notify or closed its end: reads see end of stream.
    read_closed: bool,
    /// close_notify is queued: no more writes.
    write_closed: bool,
    /// The session failed: its alert is written out, then every call reports this.
    failed: Option<rustls::Error>,
}

/// Runs the server side of a TLS handshake over `inner`, starting with the ciphertext
/// already read from it into `received` (the first bytes of a direct TLS connection; an
/// empty buffer otherwise). Under TLS 1.3 the session tickets rustls issues at the end of
/// the handshake stay queued and go out with the first write (or the close). On failure
/// the alert is sent first, and the error carries the [`rustls::Error`] (see
/// [`crate::tls::verification_failure`]).
pub async fn accept<T>(
    inner: T,
    config: Arc<ServerConfig>,
    received: ReadBuf,
) -> io::Result<TlsStream<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        conn,
        inner,
        incoming: received.with_ceiling(INCOMING_CEILING),
        plain: ByteQueue::new(INCOMING_CEILING),
        outgoing: ByteQueue::new(OUTGOING_CEILING),
        read_closed: false,
        write_closed: false,
        failed: None,
    };
    futures_lite::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

/// The io::Error for a TLS failure, with the rustls error inside for whoever needs the
/// detail.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// rustls's answer to [`ByteQueue::encode`] when the room was too small (it says how much
/// is needed), or when the record was already written.
fn encode_room(e: EncodeError) -> Result<usize, Option<usize>> {
    match e {
        EncodeError::InsufficientSize(s) => Err(Some(s.required_size)),
        EncodeError::AlreadyEncoded => Ok(0),
    }
}

/// The room an encryption needs, or `None` when the session can encrypt no more.
fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        EncryptError::EncryptExhausted => None,
    }
}

/// What the state machine should do once it may send application data.
enum Act<'a> {
    Nothing,
    Encrypt(&'a [io::IoSlice<'a>]),
    CloseNotify,
}

/// Where [`TlsStream::drive`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// rustls needs more ciphertext (in the handshake, or to complete a record).
    NeedInput,
    /// Everything buffered is processed and application data may be sent.
    Writable,
    /// The reader's buffer is full.
    ReaderFull,
    /// Both sides sent close_notify.
    Closed,
}

struct Driven {
    rest: Rest,
    /// Plaintext bytes copied into the reader's buffer.
    delivered: usize,
    /// Plaintext bytes encrypted for [`Act::Encrypt`].
    encrypted: usize,
}

enum Failure {
    Tls(rustls::Error),
    Io(io::Error),
}

impl<T: AsyncRead + AsyncWrite + Unpin> TlsStream<T> {
    /// The plain connection underneath.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The ALPN protocol the handshake settled on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The certificate chain the client presented (verified by rustls), end entity first.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// True when any of the buffers owns memory (for tests and accounting).
    pub fn has_storage(&self) -> bool {
        self.incoming.has_storage() || self.plain.has_storage() || self.outgoing.has_storage()
    }

    /// Runs rustls's state machine over the buffered ciphertext until it needs more input,
    /// may send application data (and then does `act`), or fills `reader` (plaintext that
    /// does not fit goes to `plain`; with an empty `reader` all of it does).
    fn drive(&mut self, reader: &mut [u8], mut act: Act<'_>) -> io::Result<Driven> {
        let reading = !reader.is_empty();
        let mut delivered = 0;
        let mut encrypted = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(self.incoming.data_mut());
            let step: Result<Option<Rest>, Failure> = match state {
                Err(e) => Err(Failure::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut step = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(e) => {
                                step = Err(Failure::Tls(e));
                                break;
                            }
                        };
                        discard += record.discard;
                        let payload = record.payload;
                        let n = payload.len().min(reader.len() - delivered);
                        reader[delivered..delivered + n].copy_from_slice(&payload[..n]);
                        delivered += n;
                        if let Err(e) = self.plain.push(&payload[n..]) {
                            step = Err(Failure::Io(e));
                            break;
                        }
                    }
                    if reading && delivered == reader.len() && step.is_ok() {
                        step = Ok(Some(Rest::ReaderFull));
                    }
                    step
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => self
                    .outgoing
                    .encode(0, |out| data.encode(out).or_else(encode_room))
                    .map(|()| None),
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // What was encoded stays in `outgoing` until sent: before any wait for
                    // the client, and by every write and flush.
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Rest::NeedInput)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let result = match std::mem::replace(&mut act, Act::Nothing) {
                        Act::Nothing => Ok(()),
                        Act::Encrypt(bufs) => {
                            let mut result = Ok(());
                            for buf in bufs.iter().filter(|b| !b.is_empty()) {
                                let take = buf.len().min(MAX_WRITE - encrypted);
                                if take == 0 {
                                    break;
                                }
                                let data = &buf[..take];
                                result = self.outgoing.encode(take + RECORD_OVERHEAD, |out| {
                                    traffic.encrypt(data, out).map_err(encrypt_room)
                                });
                                if result.is_err() {
                                    break;
                                }
                                encrypted += take;
                            }
                            result
                        }
                        Act::CloseNotify => self.outgoing.encode(RECORD_OVERHEAD, |out| {
                            traffic.queue_close_notify(out).map_err(encrypt_room)
                        }),
                    };
                    result.map(|()| Some(Rest::Writable))
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Ok(Some(Rest::Closed))
                }
                // pgring accepts no early data (max_early_data_size is 0), so rustls never
                // yields it; any other state is from a newer rustls.
                Ok(other) => Err(Failure::Tls(rustls::Error::General(format!(
                    "unexpected TLS state {other:?}"
                )))),
            };
            self.incoming.consume(discard);
            match step {
                Ok(None) => continue,
                Ok(Some(rest)) => {
                    return Ok(Driven {
                        rest,
                        delivered,
                        encrypted,
                    })
                }
                Err(Failure::Io(e)) => return Err(e),
                Err(Failure::Tls(e)) => return Err(self.fail(e)),
            }
        }
    }

    /// Records the failure and queues the alert rustls has for it.
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        log::debug!("TLS session failed: {error}");
        // rustls hands out its queued records (the alert) before looking at the input
        // again, which it must not do after an error (it would fail on the same bytes and
        // queue a second alert). Bounded: the queue is the alert and perhaps a few records.
        for _ in 0..16 {
            if !self.conn.wants_write() {
                break;
            }
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(self.incoming.data_mut());
            let more = match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => self
                    .outgoing
                    .encode(0, |out| data.encode(out).or_else(encode_room))
                    .is_ok(),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while traffic.next_record().is_some() {}
                    true
                }
                _ => false,
            };
            self.incoming.consume(discard);
            if !more {
                break;
            }
        }
        self.failed = Some(error.clone());
        tls_error(error)
    }

    /// After a failure: sends what is queued (the alert), waiting for the socket, then
    /// gives the error. A socket that fails meanwhile does not hide the TLS error.
    fn poll_failure(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // A send error is dropped: the client is gone, and the TLS error is the news.
        let _ = ready!(self.poll_send(cx));
        Poll::Ready(match &self.failed {
            Some(e) => tls_error(e.clone()),
            None => io::Error::other("TLS session failed"),
        })
    }

    /// Sends everything in `outgoing`; gives the storage back once it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, self.outgoing.bytes())) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took no TLS data",
                    )))
                }
                Ok(n) => self.outgoing.advance(n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.outgoing.release_if_empty();
        Poll::Ready(Ok(()))
    }

    /// Sends what is queued as far as the socket takes it now, without waiting (the
    /// task is woken when the socket has room again).
    fn send_now(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Reads more ciphertext. `Ok(false)` at the end of the stream.
    fn poll_read_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match ready!(self.incoming.poll_fill(cx, &mut self.inner)) {
            Ok(n) => Poll::Ready(Ok(n > 0)),
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS: no complete record or handshake message in {INCOMING_CEILING} bytes"),
            ))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.failed.is_some() {
                return self.poll_failure(cx).map(Err);
            }
            if self.read_closed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the TLS session during the handshake",
                )));
            }
            // With an empty reader, application data that came with the client's last
            // handshake flight goes to `plain`.
            let driven = match self.drive(&mut [], Act::Nothing) {
                Ok(driven) => driven,
                Err(_) if self.failed.is_some() => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match driven.rest {
                Rest::Writable if !self.conn.is_handshaking() => {
                    // Under TLS 1.3 what is left to send is the session tickets, which
                    // the client does not wait for: they go out with pgring's first
                    // answer, one send instead of two (a client that never sends its
                    // startup packet keeps them queued until client_login_timeout ends
                    // it). Under TLS 1.2 it is the server's last flight, which the client
                    // waits for: it goes now.
                    if self.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
                        ready!(self.poll_send(cx))?;
                    }
                    self.incoming.release_if_idle();
                    return Poll::Ready(Ok(()));
                }
                Rest::Closed => self.read_closed = true,
                _ => {
                    // The client answers what was sent: send all of it before waiting.
                    ready!(self.poll_send(cx))?;
                    if !ready!(self.poll_read_tls(cx))? {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection during the TLS handshake",
                        )));
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if this.failed.is_some() {
                return this.poll_failure(cx).map(Err);
            }
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.len());
                buf[..n].copy_from_slice(&this.plain.bytes()[..n]);
                this.plain.advance(n);
                this.plain.release_if_empty();
                return Poll::Ready(Ok(n));
            }
            if this.read_closed {
                this.plain.release_if_empty();
                return Poll::Ready(Ok(0));
            }
            let queued = this.outgoing.len();
            let driven = match this.drive(buf, Act::Nothing) {
                Ok(driven) => driven,
                Err(_) if this.failed.is_some() => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            // rustls may have queued records of its own (an answer to a key update):
            // they go now. Records queued before (the session tickets) wait for the
            // next write.
            if this.outgoing.len() > queued {
                this.send_now(cx)?;
            }
            if driven.delivered > 0 {
                // Storage is kept only while it holds bytes (borrowing it again from the
                // spare list for the next read costs next to nothing).
                this.incoming.release_if_idle();
                return Poll::Ready(Ok(driven.delivered));
            }
            if this.read_closed {
                continue;
            }
            match this.poll_read_tls(cx) {
                Poll::Pending => {
                    // Nothing buffered while waiting (`incoming` gave its storage back).
                    this.plain.release_if_empty();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => {
                    if !this.incoming.is_empty() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection in the middle of a TLS record",
                        )));
                    }
                    // Closed without close_notify, but at a record boundary: end of stream.
                    this.read_closed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> TlsStream<T> {
    fn poll_encrypt(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.failed.is_some() {
            return self.poll_failure(cx).map(Err);
        }
        if self.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS session is closed for writing",
            )));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if self.outgoing.len() >= OUTGOING_HIGH_WATER {
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if self.outgoing.len() >= OUTGOING_HIGH_WATER {
                return Poll::Pending;
            }
        }
        let driven = match self.drive(&mut [], Act::Encrypt(bufs)) {
            Ok(driven) => driven,
            Err(_) if self.failed.is_some() => return self.poll_failure(cx).map(Err),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if driven.rest != Rest::Writable {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS session cannot send application data",
            )));
        }
        // Whatever the socket does not take now goes with the next write or the flush.
        self.send_now(cx)?;
        Poll::Ready(Ok(driven.encrypted))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, &[io::IoSlice::new(buf)])
    }

    /// Each buffer becomes records of its own, up to one full record's worth in all.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed.is_some() {
            return this.poll_failure(cx).map(Err);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// close_notify, sent with whatever is queued, then the inner stream's close (a
    /// half-close for glommio's streams: reading stays possible).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed && this.failed.is_none() {
            this.write_closed = true;
            match this.drive(&mut [], Act::CloseNotify) {
                Ok(_) => {}
                Err(_) if this.failed.is_some() => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

/// Bytes queued in order, with storage only while it holds any: the spare list's
/// standard buffer when that is enough, a larger one (freed when emptied) up to
/// `ceiling` when not.
#[derive(Debug)]
struct ByteQueue {
    data: Vec<u8>,
    start: usize,
    end: usize,
    ceiling: usize,
}

impl ByteQueue {
    const fn new(ceiling: usize) -> Self {
        ByteQueue {
            data: Vec::new(),
            start: 0,
            end: 0,
            ceiling,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn has_storage(&self) -> bool {
        !self.data.is_empty()
    }

    fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for `n` more bytes at the tail.
    fn reserve(&mut self, n: usize) -> io::Result<()> {
        if self.data.len() - self.end >= n {
            return Ok(());
        }
        if self.data.is_empty() && n <= INITIAL_READ_BUF {
            self.data = borrow_spare();
            return Ok(());
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() - self.end >= n {
                return Ok(());
            }
        }
        let needed = self.end + n;
        if needed > self.ceiling {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("TLS buffer would exceed {} bytes", self.ceiling),
            ));
        }
        let grown = needed
            .max(self.data.len() * 2)
            .max(INITIAL_READ_BUF)
            .min(self.ceiling);
        self.data.resize(grown, 0);
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.reserve(bytes.len())?;
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        Ok(())
    }

    /// Lets `write` fill the tail, with `hint` bytes of room to start with. `write` returns
    /// the bytes written, or `Err(Some(n))` when it needs `n` bytes of room, `Err(None)`
    /// when the session can encrypt no more (sequence numbers exhausted).
    fn encode(
        &mut self,
        hint: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> Result<(), Failure> {
        self.reserve(hint).map_err(Failure::Io)?;
        // rustls says the exact size when the room is too small: the second try fits.
        for _ in 0..2 {
            match write(&mut self.data[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(Some(needed)) => self.reserve(needed).map_err(Failure::Io)?,
                Err(None) => return Err(Failure::Tls(rustls::Error::EncryptError)),
            }
        }
        Err(Failure::Io(io::Error::other(
            "TLS: rustls asked for more room than it said it needs",
        )))
    }

    /// Gives the storage back when nothing is queued.
    fn release_if_empty(&mut self) {
        if self.is_empty() && !self.data.is_empty() {
            return_spare(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::future::Future;
    use std::io::{Read, Write};
    use std::rc::Rc;
    use std::task::Waker;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// One direction of an in-memory connection; `room` limits what may wait in it
    /// (0: no limit).
    #[derive(Default)]
    struct Wire {
        bytes: VecDeque<u8>,
        closed: bool,
        room: usize,
    }

    type Shared = Rc<RefCell<Wire>>;

    /// pgring's end of the connection.
    struct ServerEnd {
        from_client: Shared,
        to_client: Shared,
    }

    impl AsyncRead for ServerEnd {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut wire = self.from_client.borrow_mut();
            if wire.bytes.is_empty() {
                return if wire.closed {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            }
            let n = wire.bytes.len().min(buf.len());
            for (dst, src) in buf.iter_mut().zip(wire.bytes.drain(..n)) {
                *dst = src;
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for ServerEnd {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut wire = self.to_client.borrow_mut();
            let room = match wire.room {
                0 => usize::MAX,
                room => room.saturating_sub(wire.bytes.len()),
            };
            if room == 0 {
                return Poll::Pending;
            }
            let n = room.min(buf.len());
            wire.bytes.extend(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.to_client.borrow_mut().closed = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A blocking rustls client at the other end, moved along by [`Client::pump`].
    struct Client {
        conn: ClientConnection,
        to_server: Shared,
        from_server: Shared,
        error: Option<rustls::Error>,
    }

    impl Client {
        /// Moves the client's records to pgring and processes pgring's; a TLS error is
        /// kept in `error`.
        fn pump(&mut self) {
            while self.conn.wants_write() {
                let mut out = Vec::new();
                self.conn.write_tls(&mut out).unwrap();
                self.to_server.borrow_mut().bytes.extend(out);
            }
            let came: Vec<u8> = self.from_server.borrow_mut().bytes.drain(..).collect();
            let mut rest = &came[..];
            while !rest.is_empty() && self.error.is_none() {
                self.conn.read_tls(&mut rest).unwrap();
                if let Err(e) = self.conn.process_new_packets() {
                    self.error = Some(e);
                }
            }
        }

        fn send(&mut self, data: &[u8]) {
            self.conn.writer().write_all(data).unwrap();
            self.pump();
        }

        /// All the plaintext the client has received.
        fn received(&mut self) -> Vec<u8> {
            self.pump();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
            got
        }
    }

    struct Pki {
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        ca: rcgen::Certificate,
        ca_key: KeyPair,
    }

    fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(key.serialize_der()).into()
    }

    /// A CA, a server certificate for localhost it signed, pgring-like server settings
    /// (one stateless ticket per handshake) and a client trusting the CA.
    fn pki() -> Pki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der(&key))
            .unwrap();
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        server.send_tls13_tickets = 1;
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
            ca,
            ca_key,
        }
    }

    fn connect(config: &Arc<ClientConfig>) -> (Client, ServerEnd) {
        let to_server = Shared::default();
        let from_server = Shared::default();
        let name = ServerName::try_from("localhost").unwrap();
        let client = Client {
            conn: ClientConnection::new(config.clone(), name).unwrap(),
            to_server: to_server.clone(),
            from_server: from_server.clone(),
            error: None,
        };
        let end = ServerEnd {
            from_client: to_server,
            to_client: from_server,
        };
        (client, end)
    }

    /// Polls `fut`, pumping the client between polls, until it is done.
    fn run<F: Future + Unpin>(fut: &mut F, client: &mut Client) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(out) = Pin::new(&mut *fut).poll(&mut cx) {
                return out;
            }
            client.pump();
        }
        panic!("no progress");
    }

    fn handshake(
        config: &Arc<ClientConfig>,
        server: &Arc<ServerConfig>,
    ) -> (Client, TlsStream<ServerEnd>) {
        let (mut client, end) = connect(config);
        let tls = run(
            &mut Box::pin(accept(end, server.clone(), nothing_read())),
            &mut client,
        )
        .unwrap();
        client.pump();
        assert!(client.error.is_none(), "{:?}", client.error);
        assert!(!client.conn.is_handshaking());
        (client, tls)
    }

    /// The read buffer of a connection that starts with an SSLRequest: empty at the
    /// handshake.
    fn nothing_read() -> ReadBuf {
        ReadBuf::new(0, crate::client::LOGIN_CEILING)
    }

    #[test]
    fn handshake_continues_from_bytes_already_read() {
        // Direct TLS: the login read the first bytes of the ClientHello to see what they
        // were; the session starts from them and reads the rest from the connection.
        let pki = pki();
        let (mut client, end) = connect(&pki.client);
        client.pump();
        let mut received = nothing_read();
        {
            let mut wire = end.from_client.borrow_mut();
            let mut cx = Context::from_waker(Waker::noop());
            let mut first = ServerEnd {
                from_client: Rc::new(RefCell::new(Wire {
                    bytes: wire.bytes.drain(..7).collect(),
                    ..Wire::default()
                })),
                to_client: Shared::default(),
            };
            assert!(matches!(
                received.poll_fill(&mut cx, &mut first),
                Poll::Ready(Ok(7))
            ));
        }
        let mut tls = run(
            &mut Box::pin(accept(end, pki.server.clone(), received)),
            &mut client,
        )
        .unwrap();
        client.pump();
        assert!(client.error.is_none(), "{:?}", client.error);
        assert!(!client.conn.is_handshaking());

        client.send(b"startup");
        let mut buf = [0u8; 64];
        match poll_read(&mut tls, &mut buf) {
            Poll::Ready(Ok(n)) => assert_eq!(&buf[..n], b"startup"),
            other => panic!("{other:?}"),
        }
    }

    fn poll_read(tls: &mut TlsStream<ServerEnd>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(tls).poll_read(&mut cx, buf)
    }

    /// Writes `bytes` and flushes, and lets the client process what came.
    fn write_flushed(tls: &mut TlsStream<ServerEnd>, client: &mut Client, bytes: &[u8]) {
        let mut write = Box::pin(async {
            futures_lite::AsyncWriteExt::write_all(&mut *tls, bytes).await?;
            futures_lite::AsyncWriteExt::flush(&mut *tls).await
        });
        run(&mut write, client).unwrap();
        drop(write);
        client.pump();
    }

    #[test]
    fn data_both_ways_and_no_storage_while_idle() {
        let pki = pki();
        let (mut client, mut tls) = handshake(&pki.client, &pki.server);
        // The session ticket waits for the first answer, and goes out with it.
        assert!(tls.has_storage(), "the ticket is queued");
        assert_eq!(client.conn.tls13_tickets_received(), 0);
        write_flushed(&mut tls, &mut client, b"welcome");
        assert_eq!(client.received(), b"welcome");
        assert_eq!(client.conn.tls13_tickets_received(), 1);
        assert!(!tls.has_storage(), "storage kept after the first answer");

        client.send(b"hello");
        let mut buf = [0u8; 64];
        let n = match poll_read(&mut tls, &mut buf) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(&buf[..n], b"hello");
        assert!(poll_read(&mut tls, &mut buf).is_pending());
        assert!(
            !tls.has_storage(),
            "storage kept while waiting for the client"
        );

        write_flushed(&mut tls, &mut client, b"world");
        assert_eq!(client.received(), b"world");
        assert!(!tls.has_storage(), "storage kept after a flush");
    }

    #[test]
    fn the_session_ticket_is_sent_and_resumes() {
        let pki = pki();
        let (mut first, mut tls) = handshake(&pki.client, &pki.server);
        assert_eq!(
            first.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        write_flushed(&mut tls, &mut first, b"welcome");
        let (again, _tls) = handshake(&pki.client, &pki.server);
        assert_eq!(
            again.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    #[test]
    fn a_full_record_goes_through_a_small_reader() {
        let pki = pki();
        let (mut client, mut tls) = handshake(&pki.client, &pki.server);
        write_flushed(&mut tls, &mut client, b"welcome");
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.send(&message);
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        while got.len() < message.len() {
            match poll_read(&mut tls, &mut buf) {
                Poll::Ready(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => panic!("after {} bytes: {other:?}", got.len()),
            }
        }
        assert_eq!(got, message);
        assert!(poll_read(&mut tls, &mut buf).is_pending());
        assert!(!tls.has_storage());
    }

    #[test]
    fn writes_wait_for_a_full_socket() {
        let pki = pki();
        let (mut client, mut tls) = handshake(&pki.client, &pki.server);
        client.from_server.borrow_mut().room = 4096;
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut cx = Context::from_waker(Waker::noop());
        let mut written = 0;
        // Nobody reads: the writes stop once the unsent ciphertext reaches the mark.
        loop {
            match Pin::new(&mut tls).poll_write(&mut cx, &message[written..]) {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => break,
            }
            assert!(written < message.len(), "never waited");
        }
        assert!(tls.outgoing.len() <= OUTGOING_HIGH_WATER + MAX_WRITE + 4 * RECORD_OVERHEAD);
        // The client reads: everything arrives, in order.
        let mut write = Box::pin(async {
            futures_lite::AsyncWriteExt::write_all(&mut tls, &message[written..]).await?;
            futures_lite::AsyncWriteExt::flush(&mut tls).await
        });
        let mut got = client.received();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000 {
            if write.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            got.extend(client.received());
        }
        drop(write);
        got.extend(client.received());
        assert_eq!(got.len(), message.len());
        assert!(got == message);
        assert!(!tls.has_storage());
    }

    #[test]
    fn close_notify_both_ways() {
        let pki = pki();
        let (mut client, mut tls) = handshake(&pki.client, &pki.server);
        client.send(b"bye");
        client.conn.send_close_notify();
        client.pump();
        let mut buf = [0u8; 16];
        assert!(matches!(poll_read(&mut tls, &mut buf), Poll::Ready(Ok(3))));
        assert!(matches!(poll_read(&mut tls, &mut buf), Poll::Ready(Ok(0))));
        let mut close = Box::pin(futures_lite::AsyncWriteExt::close(&mut tls));
        run(&mut close, &mut client).unwrap();
        drop(close);
        assert!(client.from_server.borrow().closed);
        client.pump();
        let mut rest = Vec::new();
        assert_eq!(client.conn.reader().read_to_end(&mut rest).unwrap(), 0);
        assert!(!tls.has_storage());
    }

    #[test]
    fn a_connection_cut_inside_a_record_is_an_error() {
        let pki = pki();
        let (mut client, mut tls) = handshake(&pki.client, &pki.server);
        client.conn.writer().write_all(b"cut short").unwrap();
        let mut out = Vec::new();
        client.conn.write_tls(&mut out).unwrap();
        {
            let mut wire = client.to_server.borrow_mut();
            wire.bytes.extend(&out[..out.len() - 3]);
            wire.closed = true;
        }
        let mut buf = [0u8; 16];
        match poll_read(&mut tls, &mut buf) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
    }

    /// pgring's end fed `input`, then closed: the handshake's error and what pgring sent.
    fn accept_raw(input: &[u8]) -> (io::Error, Vec<u8>) {
        let pki = pki();
        let (mut client, end) = connect(&pki.client);
        {
            let mut wire = client.to_server.borrow_mut();
            wire.bytes.extend(input);
            wire.closed = true;
        }
        let from_server = client.from_server.clone();
        let mut cx = Context::from_waker(Waker::noop());
        let mut fut = Box::pin(accept(end, pki.server.clone(), nothing_read()));
        let err = match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => e,
            Poll::Ready(Ok(_)) => panic!("accepted {input:?}"),
            Poll::Pending => panic!("waits on {input:?}"),
        };
        client.error = None;
        let sent = from_server.borrow_mut().bytes.drain(..).collect();
        (err, sent)
    }

    #[test]
    fn garbage_is_an_error_with_an_alert_never_a_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            // A handshake record holding no valid handshake message.
            b"\x16\x03\x01\x00\x05hello".to_vec(),
            // A record that announces more than any record may hold.
            vec![0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0],
            // A ClientHello announcing 16 MiB.
            vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff],
            // Application data before any handshake.
            vec![0x17, 0x03, 0x03, 0x00, 0x02, 1, 2],
        ];
        // And ClientHellos of noise.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..64 {
            let len = 4 + (x % 300) as usize;
            let body = len - 4;
            let mut v = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8];
            v.extend_from_slice(&[0x01, 0, (body >> 8) as u8, body as u8]);
            for _ in 0..body {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            inputs.push(v);
        }
        let mut alerts = 0;
        for input in inputs {
            let (err, sent) = accept_raw(&input);
            let Some(tls) = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            else {
                // Cut short: the peer closed before a whole record came.
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{input:?}: {err}");
                continue;
            };
            // rustls has an alert for most failures (not for a handshake message too
            // large, which it refuses without one); whatever it has is sent, and nothing
            // else.
            if !matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge)
            ) {
                assert_eq!(sent.len(), 7, "{input:?} ({tls}): sent {sent:?}");
            }
            if !sent.is_empty() {
                assert_eq!(&sent[..3], &[0x15, 0x03, 0x03], "{input:?} ({tls})");
                alerts += 1;
            }
        }
        assert!(alerts > 30, "{alerts} alerts");
    }

    #[test]
    fn a_handshake_message_in_tiny_records_stops_at_the_ceiling() {
        let pki = pki();
        let (client, end) = connect(&pki.client);
        {
            // A ClientHello announcing 60000 bytes, sent one byte per record: six bytes
            // of input per byte of message.
            let mut wire = client.to_server.borrow_mut();
            let mut message = vec![0x01, 0x00, 0xea, 0x60];
            message.resize(60_004, 0);
            for byte in message {
                wire.bytes.extend([0x16, 0x03, 0x01, 0x00, 0x01, byte]);
            }
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut fut = Box::pin(accept(end, pki.server.clone(), nothing_read()));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(e.to_string().contains("no complete record"), "{e}");
            }
            Poll::Ready(Ok(_)) => panic!("accepted"),
            Poll::Pending => panic!("waits"),
        }
    }

    #[test]
    fn a_missing_client_certificate_gets_its_alert() {
        let mut pki = pki();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &pki.ca, &pki.ca_key)
            .unwrap();
        pki.server = Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![cert.der().clone()], key_der(&key))
                .unwrap(),
        );
        let (mut client, end) = connect(&pki.client);
        // The socket takes a few bytes at a time: the alert still goes out whole.
        client.from_server.borrow_mut().room = 7;
        let err = run(
            &mut Box::pin(accept(end, pki.server.clone(), nothing_read())),
            &mut client,
        )
        .err()
        .expect("the handshake fails");
        let tls = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .expect("a rustls error inside");
        assert!(
            matches!(tls, rustls::Error::NoCertificatesPresented),
            "{tls}"
        );
        client.pump();
        assert!(
            matches!(
                client.error,
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRequired
                ))
            ),
            "{:?}",
            client.error
        );
    }
}
