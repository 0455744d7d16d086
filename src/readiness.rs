//! Socket readiness for a shard: one edge-triggered epoll set per executor, which the
//! executor's io_uring watches as a single descriptor.
//!
//! Why not glommio's own streams: after every read that does not fill the buffer, a
//! glommio stream arms a fresh io_uring poll on its socket (a `Source` allocated, an SQE
//! submitted, then a CQE reaped and a waker called), and the kernel arms and tears down a
//! wait-queue entry each time. A pooler makes two such reads per transaction, and that
//! machinery alone cost more CPU per transaction than all of PgBouncer: a byte relay with
//! no protocol logic on glommio's streams used 1.13× to 1.30× PgBouncer's CPU per
//! transaction across four runs, the same relay on this module 0.98×, 0.99× and 1.16×
//! in three (`bench/relay.sh`, bench/RESULTS.md), and pgring's user-space instructions
//! per pooled transaction fell by a third.
//!
//! How it works:
//! - A socket is registered once, when it is made, for input and peer hang-up,
//!   edge-triggered; output joins the registration the first time a write (or a connect)
//!   has to wait. Its `Slot` holds two flags (`readable`, `writable`) and the wakers of
//!   the task waiting on each direction.
//! - Reads and writes are plain non-blocking system calls. `EAGAIN` clears the flag and
//!   parks the task's waker. A read that returned less than asked for clears `readable`
//!   too (the queue was emptied, so the next read would say `EAGAIN`), unless the peer
//!   has hung up: EOF is no new event, so `hung_up` keeps the socket readable.
//! - The driver task (`Poller::drive`) harvests events with `epoll_wait`, sets the flags
//!   and wakes the parked tasks. When nothing else is runnable it may block in
//!   `epoll_wait` for a moment (`Poller::set_idle_wait`; shards do, for 4 ms), which is
//!   far cheaper than a sleep in glommio; when that brings nothing, it waits for the
//!   epoll descriptor to become readable through glommio, so an idle shard sleeps in
//!   io_uring, together with its timers and channels.
//! - Tasks are started with [`spawn`], which counts their polls: that count is how the
//!   driver knows that nothing but itself is runnable.
//!
//! Invariant: a flag is cleared only by the task whose system call saw the socket
//! drained, and whatever arrives after that call raises an event that the driver harvests
//! later, on the same thread, setting the flag again. So no readiness is lost: a task
//! parks only on a socket that has nothing for it yet.
//!
//! Everything here belongs to one executor thread (`Rc`, `RefCell`); [`Poller::current`]
//! finds or makes the poller of the executor it is called on.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use socket2::{Domain, SockAddr, SockRef, Type};

/// Events harvested per `epoll_wait`; more are taken by the next call.
const EVENTS_PER_HARVEST: usize = 64;

/// The epoll token of the poller's [`Bell`] (slot tokens are indexes, far below it).
const BELL_TOKEN: u64 = u64::MAX;

/// Readiness of one registered descriptor and the tasks waiting for it.
#[derive(Default)]
struct Slot {
    readable: bool,
    writable: bool,
    /// The peer has shut down its side or the connection failed: reads no longer block
    /// (they return EOF or the error), so `readable` stays set.
    hung_up: bool,
    /// `EPOLLOUT` is in the registration. It is left out until a write (or a connect)
    /// has to wait: a socket registered for it reports an event at once, since it is
    /// writable, and that event would cost the shard a wake for nothing at every accept.
    watching_output: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// One executor's epoll set and the slots of the descriptors registered in it.
pub struct Poller {
    epoll: OwnedFd,
    /// Indexed by the token registered with each descriptor.
    slots: RefCell<Vec<Slot>>,
    /// Tokens of closed sockets, reused before the vector grows.
    free: RefCell<Vec<usize>>,
    /// How long the driver may wait in `epoll_wait` itself when no other task is
    /// runnable, in milliseconds, before the executor sleeps (0: never).
    idle_wait_ms: Cell<i32>,
    /// An eventfd in the epoll set that other threads write to (see [`Bell`]).
    bell: Arc<OwnedFd>,
    /// The bell rang since the driver last looked.
    rung: Cell<bool>,
}

/// Lets another thread get a shard's executor to look at its glommio channels now.
///
/// Messages between shards travel on glommio's channel mesh, which an executor reads
/// between runs of its task queue, and glommio wakes a receiver only when it sleeps in
/// io_uring. A driver waiting in `epoll_wait` (its idle wait) or a busy one would leave a
/// message for up to the idle wait or the preemption timer. So the sender rings the
/// receiver's bell after sending: the eventfd makes the receiver's `epoll_wait` return,
/// and its driver then lets the executor run its loop (which reads the channels) instead
/// of waiting again. Cloneable and `Send`; ringing a poller that is gone does nothing.
#[derive(Clone)]
pub struct Bell(Arc<OwnedFd>);

impl Bell {
    /// Wakes the poller's driver (one `write`).
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte buffer, as eventfd requires; the descriptor is open while
        // `self` holds it. A full counter (EAGAIN) means it is ringing already.
        unsafe {
            libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len());
        }
    }
}

thread_local! {
    /// The poller of the executor running on this thread, with that executor's id.
    static CURRENT: RefCell<Option<(usize, Rc<Poller>)>> = const { RefCell::new(None) };
    /// Polls of tasks started with [`spawn`] on this thread, so that the driver can tell
    /// whether anything but itself ran since its last turn.
    static TASK_POLLS: Cell<u64> = const { Cell::new(0) };
}

/// Spawns a task on the current executor, like `glommio::spawn_local`, but with its
/// polls counted, which the driver needs in order to know when nothing else is runnable
/// (see `Poller::drive`). On an executor with an idle wait, every task that can wake
/// another one without going through a socket must be started this way (or wrapped in
/// [`Counted`]); otherwise the task it wakes may wait for the idle wait to end.
pub fn spawn<F>(future: F) -> glommio::Task<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(Counted::new(future))
}

/// The number of counted task polls so far on this thread.
fn task_polls() -> u64 {
    TASK_POLLS.with(Cell::get)
}

/// A future whose every poll is counted in `TASK_POLLS`.
pub struct Counted<F> {
    inner: F,
}

impl<F> Counted<F> {
    /// Wraps `inner` (for futures that are not spawned through [`spawn`], such as an
    /// executor's main future).
    pub fn new(inner: F) -> Counted<F> {
        Counted { inner }
    }
}

impl<F: std::future::Future> std::future::Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        TASK_POLLS.with(|n| n.set(n.get().wrapping_add(1)));
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
        // `Counted` has no Drop impl or other access that would move it.
        unsafe { self.map_unchecked_mut(|c| &mut c.inner) }.poll(cx)
    }
}

impl Poller {
    /// The poller of the glommio executor this is called on, made (and its driver task
    /// spawned) on first use. Must be called from inside an executor.
    pub fn current() -> io::Result<Rc<Poller>> {
        let executor = glommio::executor().id();
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            if let Some((id, poller)) = current.as_ref() {
                if *id == executor {
                    return Ok(poller.clone());
                }
            }
            let poller = Rc::new(Poller::new()?);
            glommio::spawn_local(poller.clone().drive()).detach();
            *current = Some((executor, poller.clone()));
            Ok(poller)
        })
    }

    fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 and eventfd take no pointers; a non-negative result is a
        // new fd, owned by nobody else.
        let (epoll, bell) = unsafe {
            let epoll = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let bell = OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
            ))?);
            (epoll, bell)
        };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: BELL_TOKEN,
        };
        // SAFETY: `event` is valid for the call; both descriptors are open.
        check(unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                bell.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(Poller {
            epoll,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            idle_wait_ms: Cell::new(0),
            bell: Arc::new(bell),
            rung: Cell::new(false),
        })
    }

    /// A handle other threads can use to wake this poller's driver (see [`Bell`]).
    pub fn bell(&self) -> Bell {
        Bell(self.bell.clone())
    }

    /// Empties the bell's counter (so that the next ring raises a new event) and notes
    /// that it rang.
    fn answer_bell(&self) {
        let mut count = [0u8; 8];
        // SAFETY: an 8-byte buffer, as eventfd requires; non-blocking, so an empty
        // counter returns EAGAIN at once.
        unsafe {
            libc::read(
                self.bell.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            );
        }
        self.rung.set(true);
    }

    /// Lets the driver wait up to `wait` (whole milliseconds, at most a second) in
    /// `epoll_wait` itself once nothing else on the executor is runnable, before the
    /// executor goes to sleep in io_uring. See `Poller::drive` for what this saves and
    /// what it costs. The executor's preemption timer must be longer: it bounds how late
    /// timers and cross-thread messages are while the shard is busy, and its expiry ends
    /// a wait early, so a shorter one would keep a quiet executor from ever sleeping.
    pub fn set_idle_wait(&self, wait: Duration) {
        self.idle_wait_ms.set(wait.as_millis().min(1000) as i32);
    }

    /// Adds `fd` to the set, ready to read until a system call says otherwise, and ready
    /// to write unless it is still `connecting` (then its output is watched from the
    /// start, to learn when the connection is made).
    fn register(&self, fd: RawFd, connecting: bool) -> io::Result<usize> {
        let token = match self.free.borrow_mut().pop() {
            Some(token) => token,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::default());
                slots.len() - 1
            }
        };
        self.slots.borrow_mut()[token] = Slot {
            readable: true,
            writable: !connecting,
            hung_up: false,
            watching_output: connecting,
            reader: None,
            writer: None,
        };
        if let Err(e) = self.control(libc::EPOLL_CTL_ADD, fd, token, connecting) {
            self.free.borrow_mut().push(token);
            return Err(e);
        }
        Ok(token)
    }

    /// Adds `EPOLLOUT` to `fd`'s registration, once its output has to be waited for.
    /// (If the socket became writable meanwhile, the kernel reports it at once.)
    fn watch_output(&self, fd: RawFd, token: usize) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, true)?;
        self.slots.borrow_mut()[token].watching_output = true;
        Ok(())
    }

    /// `epoll_ctl` ADD or MOD: input and hang-ups always, output when asked, edge-triggered.
    fn control(&self, op: libc::c_int, fd: RawFd, token: usize, output: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        if output {
            events |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token as u64,
        };
        // SAFETY: `event` is valid for the call; both descriptors are open.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) }).map(drop)
    }

    /// Frees the token of a descriptor that is about to be closed.
    ///
    /// No `EPOLL_CTL_DEL`: closing a descriptor takes it out of every epoll set, provided
    /// no other descriptor refers to the same open socket, and none does: sockets here are
    /// never duplicated (a Unix-socket client handed to another shard moves before it is
    /// registered). That saves a system call per connection. Between this call and the
    /// close, which follows at once in `Socket`'s drop (a `Listener` holds one), the
    /// thread runs no harvest, so no event can land on the freed token.
    fn deregister(&self, token: usize) {
        self.slots.borrow_mut()[token] = Slot::default();
        self.free.borrow_mut().push(token);
    }

    /// Takes what is ready, waiting up to `timeout_ms` for the first event, sets the
    /// flags and wakes the waiting tasks. Returns how many events there were (0 on a
    /// timeout or an interrupted wait).
    fn harvest(&self, mut timeout_ms: i32) -> usize {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_HARVEST];
        let mut total = 0;
        loop {
            // SAFETY: `events` is valid for EVENTS_PER_HARVEST entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_HARVEST as i32,
                    timeout_ms,
                )
            };
            timeout_ms = 0;
            if n <= 0 {
                // EINTR or nothing ready: the driver decides what next.
                return total;
            }
            let n = n as usize;
            total += n;
            // At most a reader and a writer per event, taken out of the slots first.
            let mut wake: [Option<Waker>; 2 * EVENTS_PER_HARVEST] =
                [const { None }; 2 * EVENTS_PER_HARVEST];
            let mut woken = 0;
            {
                let mut slots = self.slots.borrow_mut();
                for event in &events[..n] {
                    if event.u64 == BELL_TOKEN {
                        self.answer_bell();
                        continue;
                    }
                    let Some(slot) = slots.get_mut(event.u64 as usize) else {
                        continue;
                    };
                    let bits = event.events as i32;
                    let gone = bits & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
                    if gone || bits & libc::EPOLLRDHUP != 0 {
                        slot.hung_up = true;
                    }
                    if slot.hung_up || bits & libc::EPOLLIN != 0 {
                        slot.readable = true;
                        if let Some(waker) = slot.reader.take() {
                            wake[woken] = Some(waker);
                            woken += 1;
                        }
                    }
                    if gone || bits & libc::EPOLLOUT != 0 {
                        slot.writable = true;
                        if let Some(waker) = slot.writer.take() {
                            wake[woken] = Some(waker);
                            woken += 1;
                        }
                    }
                }
            }
            // Outside the borrow: a waker may run code that touches the slots.
            for waker in wake[..woken].iter_mut().filter_map(Option::take) {
                waker.wake();
            }
            if n < EVENTS_PER_HARVEST {
                return total;
            }
        }
    }

    /// The driver: harvest and wake; when nothing else is runnable, wait a moment in
    /// `epoll_wait` itself (if [`Poller::set_idle_wait`] allows); when that too brings
    /// nothing, sleep in glommio until the epoll set has something.
    ///
    /// Why wait in `epoll_wait`: a sleep in glommio costs four `io_uring_enter` (its
    /// preemption timer is cancelled and re-armed around every sleep), a `membarrier`
    /// that interrupts the cores of the process's other threads, and the doorbell's
    /// descriptor; one `epoll_wait` that blocks costs one system call. A shard with one
    /// busy client sleeps twice per transaction.
    ///
    /// Why it is safe: blocking inside a task holds up every other task, so the driver
    /// blocks only when nothing else is runnable. It knows this from the count of task
    /// polls ([`spawn`], [`Counted`]): it yields after every turn that woke something
    /// or saw other tasks run, so it is polled again only after the tasks queued before
    /// it have run, and if none ran in between, the queue holds nothing but the driver.
    /// Timers and messages from other threads are processed by the executor between
    /// runs of the task queue, which a busy driver keeps going: they wait until the
    /// executor's preemption timer ends the run (a preemption also makes the driver
    /// yield instead of blocking), or at most the idle wait. The tasks those wake may be
    /// queued behind the driver, so after the executor has picked a queue to run again
    /// (glommio's `scheduler_runs`, which the driver alone reads and so resets) the
    /// driver does not block either. Another thread that needs the executor's loop to
    /// run soon (a shard that sent this one a message) rings the [`Bell`]: the driver
    /// then parks on the doorbell instead of yielding, so the task queue drains and the
    /// executor reads its channels.
    async fn drive(self: Rc<Self>) {
        let mut seen = task_polls();
        // The last turn blocked and came back with events: the turn after it, which
        // sees the woken tasks' polls, does not look again (a quiet shard would find
        // nothing, one call per event wasted); the blocking call of the turn after that
        // returns at once if anything came meanwhile.
        let mut woke_from_wait = false;
        loop {
            let polls = task_polls();
            let executor_turned = glommio::executor().executor_stats().scheduler_runs() > 0;
            let others_ran = polls != seen || executor_turned;
            seen = polls;
            if others_ran && std::mem::take(&mut woke_from_wait) {
                futures_lite::future::yield_now().await;
                continue;
            }
            let wait_ms = if others_ran {
                0
            } else {
                self.idle_wait_ms.get()
            };
            let events = self.harvest(wait_ms);
            woke_from_wait = wait_ms > 0 && events > 0;
            // A rung bell: let the executor run its loop (the channels) before anything
            // else, by parking on the doorbell below; it rings at once if events wait.
            let bell = self.rung.replace(false);
            if !bell && (events > 0 || others_ran || glommio::executor().need_preempt()) {
                futures_lite::future::yield_now().await;
                continue;
            }
            if let Err(e) = self.wait_for_events().await {
                log::error!("socket readiness: waiting on the epoll set failed: {e}");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            seen = task_polls();
        }
    }

    /// Waits, through the executor's io_uring, until the epoll set is readable.
    ///
    /// glommio offers no public way to poll an arbitrary descriptor, but a stream made
    /// from a descriptor arms a readiness poll on it at once: a [`Doorbell`] over a
    /// duplicate of the epoll descriptor is made for each wait and dropped after it
    /// rang, which closes the duplicate.
    async fn wait_for_events(&self) -> io::Result<()> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers; the epoll fd is open.
        let dup = check(unsafe { libc::fcntl(self.epoll.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        Doorbell {
            // SAFETY: `dup` is a new descriptor; ownership moves to the stream, which
            // closes it.
            stream: unsafe { glommio::net::UnixStream::from_raw_fd(dup) },
            armed: false,
        }
        .await;
        Ok(())
    }
}

/// Ready once glommio's readiness poll on the epoll descriptor has completed.
///
/// The first poll reads from the stream, which parks the driver's waker on glommio's
/// pending poll; the wake that follows can only come from that poll (the driver waits on
/// nothing else meanwhile), so the second poll is ready without reading again: the read
/// would only fail, the descriptor not being a socket. A wake with nothing harvested
/// costs one more round, never a lost event.
struct Doorbell {
    stream: glommio::net::UnixStream,
    armed: bool,
}

impl std::future::Future for Doorbell {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed {
            return Poll::Ready(());
        }
        let mut byte = [0u8; 1];
        match Pin::new(&mut self.stream).poll_read(cx, &mut byte) {
            Poll::Pending => {
                self.armed = true;
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Ready(()),
        }
    }
}

/// What a [`Socket`] is connected over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Tcp,
    Unix,
}

/// A non-blocking stream socket registered with its executor's [`Poller`].
pub struct Socket {
    fd: OwnedFd,
    token: usize,
    family: Family,
    poller: Rc<Poller>,
}

impl Socket {
    /// Registers a connected stream socket with the current executor's poller (and makes
    /// it non-blocking).
    pub fn new(fd: OwnedFd, family: Family) -> io::Result<Socket> {
        SockRef::from(&fd).set_nonblocking(true)?;
        Socket::register(fd, family, false)
    }

    /// [`new`](Self::new) for a socket that is non-blocking already: one accepted by
    /// [`Listener::accept`] or made with `SOCK_NONBLOCK`. Saves the `fcntl` that `new`
    /// spends to make sure, once per client login.
    pub fn from_nonblocking(fd: OwnedFd, family: Family) -> io::Result<Socket> {
        Socket::register(fd, family, false)
    }

    /// Registers `fd`, which must be non-blocking (checked in debug builds).
    fn register(fd: OwnedFd, family: Family, connecting: bool) -> io::Result<Socket> {
        debug_assert!(
            SockRef::from(&fd).nonblocking().unwrap_or(false),
            "a blocking socket would stall the whole shard"
        );
        let poller = Poller::current()?;
        let token = poller.register(fd.as_raw_fd(), connecting)?;
        Ok(Socket {
            fd,
            token,
            family,
            poller,
        })
    }

    /// Opens a TCP connection to `addr`, within `timeout` (zero = no limit beyond the
    /// kernel's).
    pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<Socket> {
        let socket = socket2::Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        let connecting = match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
            Err(e) => return Err(e),
        };
        // Writable once connected (or failed: SO_ERROR then says why).
        let socket = Socket::register(socket.into(), Family::Tcp, connecting)?;
        let connected = futures_lite::future::poll_fn(|cx| socket.poll_writable(cx));
        if timeout.is_zero() {
            connected.await?;
        } else {
            crate::timeout::with_timeout(timeout, connected)
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))??;
        }
        if let Some(e) = SockRef::from(&socket.fd).take_error()? {
            return Err(e);
        }
        Ok(socket)
    }

    /// Connects to a Unix socket. A non-blocking connect either completes at once or
    /// fails (a full backlog answers EAGAIN).
    pub fn connect_unix(path: &Path) -> io::Result<Socket> {
        let socket =
            socket2::Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
        socket.connect(&SockAddr::unix(path)?)?;
        Socket::from_nonblocking(socket.into(), Family::Unix)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Socket options, through socket2, without giving up ownership.
    pub fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(&self.fd)
    }

    /// shutdown(2): the peer reads EOF after what was sent when `how` includes writing.
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock_ref().shutdown(how)
    }

    /// Ready when the socket can take bytes (or has failed: the next call says how).
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut slots = self.poller.slots.borrow_mut();
        let slot = &mut slots[self.token];
        if slot.writable {
            return Poll::Ready(Ok(()));
        }
        park(&mut slot.writer, cx);
        Poll::Pending
    }

    /// Runs `op` (a non-blocking system call) while the socket is ready in the direction
    /// `reading` says; `EAGAIN` parks the task until an event says it is ready again.
    ///
    /// A read that returns less than `drain_below` bytes (0: never) marks the socket
    /// drained: the next read waits for an event instead of making a system call that
    /// would say `EAGAIN`. A short read empties the receive queue (TCP and Unix stream
    /// sockets copy all that is queued, up to the buffer's size), but not a FIN queued
    /// behind the data: EOF would then never come as a new event. Its event said
    /// `EPOLLRDHUP` when it was harvested, before the read or after it, and `hung_up`
    /// keeps the socket readable from then on.
    fn poll_io(
        &self,
        cx: &mut Context<'_>,
        reading: bool,
        drain_below: usize,
        mut op: impl FnMut(RawFd) -> isize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut slots = self.poller.slots.borrow_mut();
            let slot = &mut slots[self.token];
            let (ready, waiter) = if reading {
                (&mut slot.readable, &mut slot.reader)
            } else {
                (&mut slot.writable, &mut slot.writer)
            };
            if !*ready {
                park(waiter, cx);
                return Poll::Pending;
            }
            let n = op(self.fd.as_raw_fd());
            if n >= 0 {
                let n = n as usize;
                if n > 0 && n < drain_below && !slot.hung_up {
                    *ready = false;
                }
                return Poll::Ready(Ok(n));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => {
                    *ready = false;
                    if !reading && !slot.watching_output {
                        drop(slots);
                        if let Err(e) = self.poller.watch_output(self.fd.as_raw_fd(), self.token) {
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// Leaves `cx`'s waker in `waiter`, cloning only when it is a different one.
fn park(waiter: &mut Option<Waker>, cx: &Context<'_>) {
    match waiter {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *waiter = Some(cx.waker().clone()),
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.poller.deregister(self.token);
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let wanted = buf.len();
        self.poll_io(cx, true, wanted, |fd| {
            // SAFETY: `buf` is valid for writes of its length; MSG_DONTWAIT never blocks.
            unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
        })
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, false, 0, |fd| {
            // SAFETY: `buf` is valid for reads of its length; MSG_NOSIGNAL turns a closed
            // peer into EPIPE instead of SIGPIPE.
            unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            }
        })
    }

    /// All the buffers in one `sendmsg` (a TLS flight is several records).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Linux takes at most IOV_MAX (1024) buffers; a partial write is reported as such.
        let count = bufs.len().min(1024);
        self.poll_io(cx, false, 0, |fd| {
            // SAFETY: an all-zero msghdr is valid (no address, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads it.
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = count as _;
            // SAFETY: `msg` points at `count` valid iovecs borrowed for the call.
            unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-closes: the peer reads EOF, and reading stays possible.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(std::net::Shutdown::Write))
    }
}

/// A listening socket registered with its executor's [`Poller`].
pub struct Listener {
    socket: Socket,
}

impl Listener {
    /// Registers a bound, listening socket with the current executor's poller.
    pub fn new(fd: OwnedFd, family: Family) -> io::Result<Listener> {
        Ok(Listener {
            socket: Socket::new(fd, family)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SockAddr> {
        self.socket.sock_ref().local_addr()
    }

    /// The next connection, non-blocking and close-on-exec, with its peer's address.
    /// The descriptor is not registered: [`Socket::new`] does that on the executor that
    /// serves it.
    ///
    /// A connection that the client reset before it was accepted (`ECONNABORTED`) is
    /// skipped; other errors (out of descriptors, say) are the caller's to handle.
    pub async fn accept(&self) -> io::Result<(OwnedFd, SockAddr)> {
        loop {
            match self.accept_one().await {
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                result => return result,
            }
        }
    }

    async fn accept_one(&self) -> io::Result<(OwnedFd, SockAddr)> {
        let mut accepted = None;
        futures_lite::future::poll_fn(|cx| {
            self.socket.poll_io(cx, true, 0, |fd| {
                // SAFETY: sockaddr_storage is plain data; accept4 writes at most `len`
                // bytes into it and the new fd is owned by the caller.
                unsafe {
                    let mut storage: libc::sockaddr_storage = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    let conn = libc::accept4(
                        fd,
                        (&mut storage as *mut libc::sockaddr_storage).cast(),
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    );
                    if conn >= 0 {
                        accepted = Some((OwnedFd::from_raw_fd(conn), SockAddr::new(storage, len)));
                    }
                    conn as isize
                }
            })
        })
        .await?;
        accepted.ok_or_else(|| io::Error::other("accept4 returned no descriptor"))
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    fn executor() -> glommio::LocalExecutor {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an io_uring executor")
    }

    async fn loopback_listener() -> (Listener, SocketAddr) {
        let socket = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0))))
            .unwrap();
        socket.listen(128).unwrap();
        let listener = Listener::new(socket.into(), Family::Tcp).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        (listener, addr)
    }

    /// A connected pair of loopback sockets: (the connecting side, the accepted side).
    async fn connected_pair(listener: &Listener, addr: SocketAddr) -> (Socket, Socket) {
        let client = Socket::connect_tcp(addr, Duration::ZERO).await.unwrap();
        let (fd, _) = listener.accept().await.unwrap();
        (client, Socket::new(fd, Family::Tcp).unwrap())
    }

    /// Sends back whatever arrives, until the peer closes.
    async fn echo_until_eof(mut socket: Socket) {
        let mut buf = [0u8; 64];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            socket.write_all(&buf[..n]).await.unwrap();
        }
    }

    /// Many connections, each a task on one side and an echo task on the other, all on
    /// one executor: every round trip needs a wake from the poller.
    #[test]
    fn concurrent_round_trips_all_complete() {
        executor().run(async {
            let (listener, addr) = loopback_listener().await;
            let echo = spawn(async move {
                let mut tasks = Vec::new();
                for _ in 0..20 {
                    let (fd, _) = listener.accept().await.unwrap();
                    tasks.push(spawn(echo_until_eof(Socket::new(fd, Family::Tcp).unwrap())));
                }
                for task in tasks {
                    task.await;
                }
            });
            let mut clients = Vec::new();
            for c in 0..20u32 {
                clients.push(spawn(async move {
                    let mut socket = Socket::connect_tcp(addr, Duration::from_secs(5))
                        .await
                        .unwrap();
                    for i in 0..100u32 {
                        let message = (c * 1000 + i).to_be_bytes();
                        socket.write_all(&message).await.unwrap();
                        let mut back = [0u8; 4];
                        socket.read_exact(&mut back).await.unwrap();
                        assert_eq!(back, message);
                    }
                    socket.close().await.unwrap();
                }));
            }
            for client in clients {
                client.await;
            }
            echo.await;
        });
    }

    /// A writer that fills the socket parks until the reader drains it, and every byte
    /// arrives in order; then the reader sees EOF.
    #[test]
    fn a_full_socket_parks_the_writer_until_the_peer_reads() {
        executor().run(async {
            let (listener, addr) = loopback_listener().await;
            let total = 8 << 20;
            let writer = spawn(async move {
                let mut socket = Socket::connect_tcp(addr, Duration::ZERO).await.unwrap();
                let chunk: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
                let mut sent = 0;
                while sent < total {
                    socket.write_all(&chunk).await.unwrap();
                    sent += chunk.len();
                }
                socket.close().await.unwrap();
            });
            let (fd, _) = listener.accept().await.unwrap();
            let mut socket = Socket::new(fd, Family::Tcp).unwrap();
            // Let the writer fill the buffers before reading anything.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let mut received = 0usize;
            let mut buf = vec![0u8; 10_000];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                for (k, byte) in buf[..n].iter().enumerate() {
                    assert_eq!(*byte, ((received + k) % 65_536 % 251) as u8);
                }
                received += n;
            }
            assert_eq!(received, total);
            writer.await;
        });
    }

    /// Data and the FIN behind it, queued together: the read that takes the data is short,
    /// and the EOF after it must still come (it raises no event of its own by then).
    #[test]
    fn eof_queued_behind_data_is_seen() {
        use std::io::Write;
        executor().run(async {
            let (listener, addr) = loopback_listener().await;
            for pause_ms in [0u64, 1, 5, 0, 1, 5] {
                let mut peer = std::net::TcpStream::connect(addr).unwrap();
                let (fd, _) = listener.accept().await.unwrap();
                let mut socket = Socket::new(fd, Family::Tcp).unwrap();
                peer.write_all(b"last words").unwrap();
                peer.shutdown(std::net::Shutdown::Write).unwrap();
                glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
                let mut buf = [0u8; 64];
                let n = socket.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"last words");
                let eof =
                    crate::timeout::with_timeout(Duration::from_secs(5), socket.read(&mut buf))
                        .await
                        .expect("EOF within 5 s");
                assert_eq!(eof.unwrap(), 0);
            }
        });
    }

    /// Several buffers go out in one call, in order.
    #[test]
    fn vectored_writes_send_every_buffer_in_order() {
        executor().run(async {
            let (listener, addr) = loopback_listener().await;
            let (mut client, mut server) = connected_pair(&listener, addr).await;
            let bufs = [
                io::IoSlice::new(b"one "),
                io::IoSlice::new(b""),
                io::IoSlice::new(b"two "),
                io::IoSlice::new(b"three"),
            ];
            let n = futures_lite::future::poll_fn(|cx| {
                Pin::new(&mut client).poll_write_vectored(cx, &bufs)
            })
            .await
            .unwrap();
            assert_eq!(n, 13);
            let mut got = [0u8; 13];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"one two three");
        });
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        executor().run(async {
            // A port that was just free: bound, read, and closed again.
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let err = Socket::connect_tcp(addr, Duration::from_secs(5))
                .await
                .err()
                .expect("nothing listens there");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        });
    }

    /// Each executor gets a poller of its own, also when one thread runs several in turn
    /// (the first one's driver task is gone with it).
    #[test]
    fn a_second_executor_on_the_same_thread_gets_its_own_poller() {
        for _ in 0..2 {
            executor().run(async {
                let (listener, addr) = loopback_listener().await;
                let (mut client, mut server) = connected_pair(&listener, addr).await;
                client.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"ping");
            });
        }
    }

    /// Tokens of closed sockets are reused, and a reused token carries no readiness or
    /// waker over from its previous socket.
    #[test]
    fn closed_sockets_give_their_slots_back() {
        executor().run(async {
            let (listener, addr) = loopback_listener().await;
            for round in 0..50u8 {
                let (mut client, mut server) = connected_pair(&listener, addr).await;
                client.write_all(&[round]).await.unwrap();
                let mut got = [0u8; 1];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got[0], round);
            }
            // Two sockets open at a time, plus the listener.
            let poller = Poller::current().unwrap();
            assert!(
                poller.slots.borrow().len() <= 3,
                "{}",
                poller.slots.borrow().len()
            );
        });
    }

    /// With an idle wait, round trips between many tasks still all complete: the driver
    /// waits in `epoll_wait` between them instead of letting the executor sleep.
    #[test]
    fn round_trips_complete_with_an_idle_wait() {
        executor().run(async {
            Poller::current()
                .unwrap()
                .set_idle_wait(Duration::from_millis(50));
            let (listener, addr) = loopback_listener().await;
            let echo = spawn(async move {
                let (fd, _) = listener.accept().await.unwrap();
                echo_until_eof(Socket::new(fd, Family::Tcp).unwrap()).await;
            });
            let mut socket = Socket::connect_tcp(addr, Duration::from_secs(5))
                .await
                .unwrap();
            for i in 0..2000u32 {
                socket.write_all(&i.to_be_bytes()).await.unwrap();
                let mut back = [0u8; 4];
                socket.read_exact(&mut back).await.unwrap();
                assert_eq!(u32::from_be_bytes(back), i);
            }
            socket.close().await.unwrap();
            echo.await;
        });
    }

    /// The driver must not block while a task is runnable. Here a task that read from a
    /// socket wakes another through a channel, not a socket; after that nothing happens
    /// on any socket, so a driver that blocked with the woken task queued behind it would
    /// hold it for the whole idle wait (a second; the preemption timer, which would also
    /// end the wait, is set longer). The byte comes from another thread, so that no timer
    /// of the executor is involved.
    #[test]
    fn a_task_woken_by_another_task_does_not_wait_for_the_idle_wait() {
        use std::io::Write;
        let executor = glommio::LocalExecutorBuilder::default()
            .preempt_timer(Duration::from_secs(2))
            .make()
            .expect("an io_uring executor");
        executor.run(async {
            Poller::current()
                .unwrap()
                .set_idle_wait(Duration::from_secs(1));
            let (listener, addr) = loopback_listener().await;
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let (fd, _) = listener.accept().await.unwrap();
            let mut socket = Socket::new(fd, Family::Tcp).unwrap();
            for _ in 0..5 {
                let (tx, rx) = futures_channel::oneshot::channel::<std::time::Instant>();
                let reader = spawn(async move {
                    let mut byte = [0u8; 1];
                    socket.read_exact(&mut byte).await.unwrap();
                    tx.send(std::time::Instant::now()).unwrap();
                    socket
                });
                let woken = spawn(async move {
                    let sent = rx.await.unwrap();
                    sent.elapsed()
                });
                // The reader parks and the driver settles into its idle wait first.
                let writer = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    peer.write_all(b"x").unwrap();
                    peer
                });
                let delay = woken.await;
                socket = reader.await;
                peer = writer.join().unwrap();
                assert!(
                    delay < Duration::from_millis(500),
                    "the woken task waited {delay:?}"
                );
            }
        });
    }

    /// A ring from another thread is one event for the driver, which answers it (so
    /// that the next ring raises a new one) and notes it; rings that pile up before the
    /// driver looks are answered together.
    #[test]
    fn a_rung_bell_raises_one_event_and_is_answered() {
        executor().run(async {
            let poller = Poller::current().unwrap();
            let bell = poller.bell();
            assert_eq!(poller.harvest(0), 0);
            let ringer = bell.clone();
            std::thread::spawn(move || {
                ringer.ring();
                ringer.ring();
            })
            .join()
            .unwrap();
            assert_eq!(poller.harvest(0), 1);
            assert!(poller.rung.replace(false));
            assert_eq!(
                poller.harvest(0),
                0,
                "answered: no event until it rings again"
            );
            bell.ring();
            assert_eq!(poller.harvest(0), 1);
            assert!(poller.rung.get());
        });
    }
}
