//! A byte relay with no PostgreSQL logic at all, to measure what an event loop alone
//! costs per transaction.
//!
//! Every accepted connection gets a connection of its own to the upstream, and bytes are
//! copied both ways until either side closes: no parsing, no pooling, no authentication.
//! Whatever CPU a relay spends per transaction is the floor for any pooler built on the
//! same event loop, since a pooler does all of this and more. Two loops are offered:
//!
//! - `glommio`: one glommio executor (io_uring), glommio's `TcpListener` and `TcpStream`,
//!   one task per connection that polls both directions, as pgring's sessions do.
//! - `epoll`: one thread, level-triggered epoll, non-blocking `read`/`write`, as
//!   PgBouncer's libevent loop does.
//! - `glommio-epoll`: one glommio executor whose sockets are pgring's
//!   (`pgring::readiness`): registered once in an epoll set that the executor's
//!   io_uring watches, the way pgring's shards run.
//!
//! `bench/relay.sh` runs both, PgBouncer and pgring against the same PostgreSQL and
//! reads each one's CPU per transaction from /proc with `loadgen tx --cpu-pid`.
//!
//! ```text
//! cargo run --release --example relay -- --listen 127.0.0.1:6700 --upstream 127.0.0.1:5432 --event-loop epoll
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures_lite::{AsyncRead, AsyncWrite};

#[derive(Parser)]
#[command(about = "A byte relay with no protocol logic: the event loop's own cost per transaction")]
struct Args {
    /// Address to accept clients on
    #[arg(long)]
    listen: SocketAddr,
    /// Address each client's bytes are relayed to (a PostgreSQL server)
    #[arg(long)]
    upstream: SocketAddr,
    /// Event loop that moves the bytes
    #[arg(long, value_enum)]
    event_loop: EventLoop,
    /// CPU to pin the relay's thread to
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum EventLoop {
    Glommio,
    Epoll,
    /// glommio's executor with pgring's socket readiness (src/readiness.rs): one epoll
    /// set per executor, which the executor's io_uring watches
    GlommioEpoll,
}

/// Bytes read in one call; a PostgreSQL round trip of a small query fits many times over.
const CHUNK: usize = 16 * 1024;

fn main() -> io::Result<()> {
    let args = Args::parse();
    match args.event_loop {
        EventLoop::Glommio => glommio_relay(&args),
        EventLoop::GlommioEpoll => glommio_epoll_relay(&args),
        EventLoop::Epoll => {
            pin_to(args.cpu);
            epoll_relay(&args)
        }
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read and write the set given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn glommio_relay(args: &Args) -> io::Result<()> {
    use glommio::net::{TcpListener, TcpStream};
    let (listen, upstream) = (args.listen, args.upstream);
    executor(args.cpu)?.run(async move {
        let listener = TcpListener::bind(listen).map_err(io::Error::from)?;
        loop {
            let client = listener.accept().await.map_err(io::Error::from)?;
            glommio::spawn_local(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(client, server).await;
            })
            .detach();
        }
    })
}

fn glommio_epoll_relay(args: &Args) -> io::Result<()> {
    use pgring::readiness::{Family, Listener, Socket};
    let (listen, upstream) = (args.listen, args.upstream);
    executor(args.cpu)?.run(async move {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(listen),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        socket.listen(1024)?;
        let listener = Listener::new(socket.into(), Family::Tcp)?;
        loop {
            let (client, _) = listener.accept().await?;
            pgring::readiness::spawn(async move {
                let Ok(server) = Socket::connect_tcp(upstream, Duration::ZERO).await else {
                    return;
                };
                let Ok(client) = Socket::new(client, Family::Tcp) else {
                    return;
                };
                let _ = client.sock_ref().set_nodelay(true);
                let _ = server.sock_ref().set_nodelay(true);
                relay(client, server).await;
            })
            .detach();
        }
    })
}

fn executor(cpu: usize) -> io::Result<glommio::LocalExecutor> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
        .make()
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Copies bytes between `a` and `b` until either side closes or fails.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(a: S, b: S) {
    let mut pair = Pair {
        a,
        b,
        a_to_b: Direction::new(),
        b_to_a: Direction::new(),
    };
    let _ = futures_lite::future::poll_fn(|cx| pair.poll(cx)).await;
}

/// One direction of a relayed connection: bytes read and not yet written.
struct Direction {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Direction {
    fn new() -> Self {
        Direction {
            buf: vec![0; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Moves bytes from `from` to `to` until one of them would block. Ready(Ok) means
    /// `from` closed.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start < self.end {
                let n = std::task::ready!(
                    Pin::new(&mut *to).poll_write(cx, &self.buf[self.start..self.end])
                )?;
                self.start += n;
                continue;
            }
            self.start = 0;
            self.end = 0;
            let n = std::task::ready!(Pin::new(&mut *from).poll_read(cx, &mut self.buf))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            self.end = n;
        }
    }
}

struct Pair<S> {
    a: S,
    b: S,
    a_to_b: Direction,
    b_to_a: Direction,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pair<S> {
    /// Both directions in one task; ends when either side closes or fails.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(r) = self.a_to_b.poll_copy(cx, &mut self.a, &mut self.b) {
            return Poll::Ready(r);
        }
        self.b_to_a.poll_copy(cx, &mut self.b, &mut self.a)
    }
}

fn epoll_relay(args: &Args) -> io::Result<()> {
    let listener = std::net::TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    // SAFETY: plain system calls on descriptors owned here; every pointer passed is valid
    // for the length given.
    unsafe {
        let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
        watch(ep, listener.as_raw_fd())?;
        // peer[fd] = the descriptor the bytes read from fd go to.
        let mut peer: Vec<RawFd> = Vec::new();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1);
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in &events[..n as usize] {
                let fd = event.u64 as RawFd;
                if fd == listener.as_raw_fd() {
                    while let Ok((client, _)) = listener.accept() {
                        let Ok(server) = std::net::TcpStream::connect(args.upstream) else {
                            continue;
                        };
                        for s in [&client, &server] {
                            s.set_nodelay(true)?;
                            s.set_nonblocking(true)?;
                        }
                        let (c, s) = (into_fd(client), into_fd(server));
                        let need = c.max(s) as usize + 1;
                        if peer.len() < need {
                            peer.resize(need, -1);
                        }
                        peer[c as usize] = s;
                        peer[s as usize] = c;
                        watch(ep, c)?;
                        watch(ep, s)?;
                    }
                    continue;
                }
                let to = peer[fd as usize];
                if to < 0 {
                    continue;
                }
                if !relay_once(fd, to, &mut buf) {
                    peer[fd as usize] = -1;
                    peer[to as usize] = -1;
                    libc::close(fd);
                    libc::close(to);
                }
            }
        }
    }
}

/// Reads what `from` has and writes all of it to `to`; false when either side is done.
///
/// A full `to` is waited for with poll(2), blocking the loop: the relay serves small
/// queries, for which it does not happen.
unsafe fn relay_once(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    // SAFETY (whole function): the caller owns both descriptors; `buf` is valid for its length.
    unsafe {
        let n = libc::read(from, buf.as_mut_ptr().cast(), buf.len());
        if n == 0 {
            return false;
        }
        if n < 0 {
            return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
        }
        let mut sent = 0;
        while sent < n as usize {
            let w = libc::write(to, buf[sent..].as_ptr().cast(), n as usize - sent);
            if w >= 0 {
                sent += w as usize;
                continue;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: to,
                events: libc::POLLOUT,
                revents: 0,
            };
            libc::poll(&mut pfd, 1, -1);
        }
        true
    }
}

fn into_fd(stream: std::net::TcpStream) -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(stream)
}

/// Registers `fd` for level-triggered readability.
unsafe fn watch(ep: RawFd, fd: RawFd) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: `event` is valid for the call; the caller owns both descriptors.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut event) }).map(drop)
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
