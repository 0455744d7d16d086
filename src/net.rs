//! Sockets: listeners bound per shard with SO_REUSEPORT, the socket options every
//! connection gets, and [`Stream`], the one type sessions read and write whatever the
//! transport (TCP, Unix socket, or TLS over either: a client's session with pgring as the
//! TLS server, or a server connection with pgring as the TLS client).
//!
//! Invariant: every TCP socket pgring accepts or opens has TCP_NODELAY set (without it a
//! TLS handshake stalls ~40 ms on delayed ACKs) and keepalive as configured.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};

use crate::readiness::{self, Family, Listener};

/// Keepalive settings, PgBouncer's `tcp_keepalive`, `tcp_keepidle`, `tcp_keepintvl`,
/// `tcp_keepcnt` (zero values leave the OS default).
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub enabled: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Keepalive {
    pub fn from_config(c: &crate::config::PoolerConfig) -> Self {
        Keepalive {
            enabled: c.tcp_keepalive,
            idle: c.tcp_keepidle,
            interval: c.tcp_keepintvl,
            count: c.tcp_keepcnt,
        }
    }
}

/// Sets TCP_NODELAY and keepalive on a connected TCP socket.
pub fn tune_tcp(socket: &Socket, keepalive: Keepalive) -> io::Result<()> {
    socket.set_nodelay(true)?;
    if keepalive.enabled {
        let mut ka = TcpKeepalive::new();
        if !keepalive.idle.is_zero() {
            ka = ka.with_time(keepalive.idle);
        }
        if !keepalive.interval.is_zero() {
            ka = ka.with_interval(keepalive.interval);
        }
        if keepalive.count > 0 {
            ka = ka.with_retries(keepalive.count);
        }
        socket.set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// Binds a TCP listener with SO_REUSEPORT, so that every shard can bind the same address
/// and the kernel spreads incoming connections over them. Call it on the shard's executor:
/// the listener joins that executor's readiness poller.
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_cloexec(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    Listener::new(socket.into(), Family::Tcp)
}

/// Binds the Unix-socket listener at `path` (on the executor that will accept from it).
pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_cloexec(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    Listener::new(socket.into(), Family::Unix)
}

/// Turns a connection accepted on the [`bind_unix`] listener (possibly on another shard)
/// into a [`Stream`] on this executor, with the peer's user id (SO_PEERCRED) when the
/// kernel gives it.
pub fn unix_client(accepted: OwnedFd) -> io::Result<(Stream, Option<u32>)> {
    let uid = peer_uid(accepted.as_raw_fd());
    // Listener::accept hands out non-blocking sockets.
    let socket = readiness::Socket::from_nonblocking(accepted, Family::Unix)?;
    Ok((Stream::Plain(socket), uid))
}

/// Turns a TCP connection accepted by [`readiness::Listener::accept`] (non-blocking
/// already) into a [`Stream`] on this executor, with the standard options.
pub fn tcp_stream(accepted: OwnedFd, keepalive: Keepalive) -> io::Result<Stream> {
    let socket = readiness::Socket::from_nonblocking(accepted, Family::Tcp)?;
    tune_tcp(&socket.sock_ref(), keepalive)?;
    Ok(Stream::Plain(socket))
}

/// The user id of the process at the other end of a Unix socket.
fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// The login name of user id `uid` (getpwuid_r: /etc/passwd or whatever NSS is set up
/// with), `None` when there is no such user.
pub fn os_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; zeroed is a valid (if meaningless) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: every pointer is valid for the sizes given; on success `result` points
        // at `pwd`, whose strings point into `buf`.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// The path of the Unix socket for `port` in `dir`, named as PostgreSQL names it.
pub fn unix_socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// Opens a TCP connection to `addr` with the standard options, within `timeout`
/// (zero = no limit beyond the kernel's).
pub async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Keepalive,
) -> io::Result<Stream> {
    let socket = readiness::Socket::connect_tcp(addr, timeout).await?;
    tune_tcp(&socket.sock_ref(), keepalive)?;
    Ok(Stream::Plain(socket))
}

/// Connects to a Unix socket without blocking the shard: a non-blocking connect either
/// completes at once or fails (a full backlog answers EAGAIN).
pub fn connect_unix(path: &Path) -> io::Result<Stream> {
    Ok(Stream::Plain(readiness::Socket::connect_unix(path)?))
}

/// A connection to a client or a server, whatever the transport.
pub enum Stream {
    /// A TCP or Unix-socket connection, driven by the shard's readiness poller.
    Plain(readiness::Socket),
    /// A client's TLS session over its TCP stream, pgring being the TLS server (boxed: the
    /// session state is large, and the plain variant should not pay for it). pgring's
    /// own adapter over rustls's unbuffered API, see [`crate::tls_stream`].
    Tls(Box<crate::tls_stream::TlsStream>),
    /// A server connection's TLS session over its TCP stream, pgring being the TLS client.
    ServerTls(Box<futures_rustls::client::TlsStream<Stream>>),
    /// Nothing: left in place while the transport is moved into a TLS session, and
    /// stays when the handshake fails. Reads see EOF, writes fail.
    Detached,
}

impl Stream {
    pub fn is_unix(&self) -> bool {
        match self {
            Stream::Plain(s) => s.family() == Family::Unix,
            Stream::Tls(s) => s.get_ref().is_unix(),
            Stream::ServerTls(s) => s.get_ref().0.is_unix(),
            Stream::Detached => false,
        }
    }

    /// True for a TCP connection without TLS (yet).
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self, Stream::Plain(s) if s.family() == Family::Tcp)
    }

    /// The end-entity certificate a client presented in its TLS handshake (DER), already
    /// verified against `client_tls_ca_file` by rustls; `None` without TLS or certificate.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(s) => s
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
            _ => None,
        }
    }

    /// True for both TLS variants: writes then need a flush to leave the TLS buffer.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_) | Stream::ServerTls(_))
    }

    /// Writes all of `bytes`, flushing when the stream is TLS (a plain socket has nothing
    /// to flush, so it pays only for the check).
    pub async fn write_all_flushed(&mut self, bytes: &[u8]) -> io::Result<()> {
        futures_lite::AsyncWriteExt::write_all(self, bytes).await?;
        if self.is_tls() {
            futures_lite::AsyncWriteExt::flush(self).await?;
        }
        Ok(())
    }

    /// Half-closes the connection: the peer reads EOF after what was sent (over TLS,
    /// after a close_notify alert).
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown(std::net::Shutdown::Write),
            // close_notify, flush, then the inner stream's poll_close, which is
            // shutdown(Write): reading stays possible.
            Stream::Tls(s) => futures_lite::AsyncWriteExt::close(&mut **s).await,
            Stream::ServerTls(s) => futures_lite::AsyncWriteExt::close(&mut **s).await,
            Stream::Detached => Err(detached()),
        }
    }

    /// True when the peer has closed the connection or sent something unasked (a
    /// server's FATAL before it exits). Never blocks. Whatever it reads is lost, which is
    /// fine for its one use: a connection it says true of is closed.
    ///
    /// A plain socket is asked through the readiness poller, at no cost while nothing
    /// has arrived: once a read has drained the socket, a read polled with a no-op waker
    /// answers Pending without a system call until an event says the socket has
    /// something, and then reads it. Over TLS, where a read would go through the TLS
    /// session, a one-byte `MSG_PEEK` asks the kernel.
    pub fn closed_or_unsolicited(&mut self) -> bool {
        match self {
            Stream::Plain(_) => {
                let mut scratch = [0u8; 64];
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(self).poll_read(&mut cx, &mut scratch).is_ready()
            }
            Stream::Detached => false,
            Stream::Tls(s) => s.get_ref().peek_closed_or_unsolicited(),
            Stream::ServerTls(s) => s.get_ref().0.peek_closed_or_unsolicited(),
        }
    }

    /// [`Stream::closed_or_unsolicited`] asked of the kernel with `MSG_PEEK`, for the
    /// socket under a TLS session.
    fn peek_closed_or_unsolicited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Detached | Stream::Tls(_) | Stream::ServerTls(_) => return false,
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer on the stack; MSG_PEEK leaves the data in place and
        // MSG_DONTWAIT makes the call return at once.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return true;
        }
        let err = io::Error::last_os_error();
        err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection has no transport",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Ok(0)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    /// futures-rustls (server connections) hands its queued records over as a list of
    /// buffers (a handshake flight is four to six records): on a plain socket they go
    /// out in one `sendmsg` instead of a `send` each. (A client's TLS session queues its
    /// records in one buffer, so it needs none of this.)
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::ServerTls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_close(cx),
            Stream::ServerTls(s) => Pin::new(&mut **s).poll_close(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_KEEPALIVE: Keepalive = Keepalive {
        enabled: false,
        idle: Duration::ZERO,
        interval: Duration::ZERO,
        count: 0,
    };

    /// The idle-server check: quiet socket, then unsolicited bytes, then a closed peer,
    /// over a real loopback connection.
    #[test]
    fn closed_or_unsolicited_sees_bytes_and_eof_and_leaves_a_quiet_socket_alone() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        use std::io::{Read, Write};
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an io_uring executor")
            .run(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let mut stream = connect_tcp(addr, Duration::ZERO, NO_KEEPALIVE)
                    .await
                    .unwrap();
                let (mut peer, _) = listener.accept().unwrap();

                // A request and its answer, as a server connection has before it idles.
                stream.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                peer.read_exact(&mut got).unwrap();
                peer.write_all(b"pong").unwrap();
                let mut buf = [0u8; 64];
                assert_eq!(stream.read(&mut buf).await.unwrap(), 4);

                // Quiet: asked twice, since asking must not change the answer.
                assert!(!stream.closed_or_unsolicited());
                assert!(!stream.closed_or_unsolicited());

                // Bytes nobody asked for (a FATAL before the server exits).
                peer.write_all(b"E").unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !stream.closed_or_unsolicited() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "unsolicited byte unseen"
                    );
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }

                // A peer that closed, on a second connection that had gone quiet.
                let mut other = connect_tcp(addr, Duration::ZERO, NO_KEEPALIVE)
                    .await
                    .unwrap();
                let (peer2, _) = listener.accept().unwrap();
                assert!(!other.closed_or_unsolicited());
                drop(peer2);
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !other.closed_or_unsolicited() {
                    assert!(std::time::Instant::now() < deadline, "EOF unseen");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            });
    }
}
