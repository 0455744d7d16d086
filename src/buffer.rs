//! [`ReadBuf`]: a growable read buffer with a hard ceiling.
//!
//! Bytes are read into the free tail and consumed from the front; consumed space is
//! reclaimed by moving the live bytes down. The buffer grows only when the bytes it holds
//! must be seen whole (a login message, a ReadyForQuery), and never past its ceiling, so a
//! peer cannot make pgring allocate by announcing a large length.
//!
//! A buffer that holds no bytes owns no memory: a read that would wait borrows storage
//! from its shard's spare list for the attempt and gives it back when nothing came (the
//! sockets are readiness-driven, so a waiting read holds no buffer in the kernel or in
//! glommio). Most of a pooler's clients are idle at any moment; this keeps an idle client
//! down to its session state instead of a read buffer each.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::AsyncRead;

/// Initial size of a connection's read buffer, and the size of the spare buffers lent to
/// empty ones.
pub const INITIAL_READ_BUF: usize = 8 * 1024;

/// Spare buffers kept per shard thread; more are freed.
const SPARE_KEEP: usize = 64;

thread_local! {
    /// Storage for empty buffers to read into, per shard thread (no sharing, no locks).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A spare buffer of [`INITIAL_READ_BUF`] bytes (a new one when the list is empty).
pub(crate) fn borrow_spare() -> Vec<u8> {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; INITIAL_READ_BUF])
}

/// Gives storage back: kept when it has the standard size and the list is not full,
/// freed otherwise.
pub(crate) fn return_spare(storage: Vec<u8>) {
    if storage.len() != INITIAL_READ_BUF {
        return;
    }
    // `try_with`: a buffer dropped while its thread exits is simply freed.
    let _ = SPARE.try_with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_KEEP {
            spare.push(storage);
        }
    });
}

#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    ceiling: usize,
}

/// The buffer is full and may not grow.
#[derive(Debug, thiserror::Error)]
#[error("read buffer full ({ceiling} bytes)")]
pub struct BufferFull {
    pub ceiling: usize,
}

/// A connection that ends gives its storage back to the shard's spare list, so that the
/// next connection does not allocate (and zero) a fresh buffer. What it held is never
/// shown to the next user: a buffer exposes only the bytes read into it.
impl Drop for ReadBuf {
    fn drop(&mut self) {
        if !self.data.is_empty() {
            return_spare(std::mem::take(&mut self.data));
        }
    }
}

impl ReadBuf {
    pub fn new(initial: usize, ceiling: usize) -> Self {
        ReadBuf {
            data: vec![0; initial.min(ceiling)],
            start: 0,
            end: 0,
            ceiling,
        }
    }

    /// Changes the most the buffer may grow to.
    pub fn set_ceiling(&mut self, ceiling: usize) {
        self.ceiling = ceiling;
    }

    /// The same buffer, bytes and storage, under another ceiling (a connection's bytes
    /// moving to a layer with its own limit, such as a TLS session).
    pub fn with_ceiling(mut self, ceiling: usize) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// The unconsumed bytes, writable (rustls decrypts TLS records where they lie).
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes free space at the tail, moving or growing as needed.
    fn spare(&mut self) -> Result<&mut [u8], BufferFull> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < self.ceiling {
                let grown = (self.data.len() * 2)
                    .max(INITIAL_READ_BUF)
                    .min(self.ceiling);
                self.data.resize(grown, 0);
            } else {
                return Err(BufferFull {
                    ceiling: self.ceiling,
                });
            }
        }
        Ok(&mut self.data[self.end..])
    }

    /// Reads once from `source` into the buffer. `Ok(0)` means end of stream.
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, source: &mut S) -> io::Result<usize> {
        futures_lite::future::poll_fn(|cx| self.poll_fill(cx, source)).await
    }

    /// One read attempt. An empty buffer borrows spare storage for the attempt and gives
    /// it back unless bytes arrived.
    pub(crate) fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut S,
    ) -> Poll<io::Result<usize>> {
        self.poll_fill_then(cx, source, true)
    }

    /// One read attempt that keeps the storage even when nothing came: for a wait that
    /// is short and will read again soon (a server's answer, a client in the middle of a
    /// transaction), where lending the storage back and forth costs more than it saves.
    pub(crate) fn poll_fill_keeping<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut S,
    ) -> Poll<io::Result<usize>> {
        self.poll_fill_then(cx, source, false)
    }

    fn poll_fill_then<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut S,
        release_when_empty: bool,
    ) -> Poll<io::Result<usize>> {
        if self.data.is_empty() && self.ceiling > 0 {
            self.data = borrow_spare();
        }
        let result = match self.spare() {
            Ok(spare) => Pin::new(source).poll_read(cx, spare),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::OutOfMemory, e))),
        };
        match result {
            Poll::Ready(Ok(n)) if n > 0 => self.end += n,
            // Nothing came: an empty buffer keeps no storage while it waits.
            _ if release_when_empty => self.release_if_idle(),
            _ => {}
        }
        result
    }

    /// Gives the storage back once the buffer holds no bytes (between transactions, after
    /// a large message went through).
    pub fn release_if_idle(&mut self) {
        if self.is_empty() && !self.data.is_empty() {
            return_spare(std::mem::take(&mut self.data));
        }
    }

    /// True when the buffer owns storage (for tests and accounting).
    pub fn has_storage(&self) -> bool {
        !self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending on the first poll, then `chunks` one by one, then end of stream.
    struct Trickle {
        polled: bool,
        chunks: Vec<&'static [u8]>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if !self.polled {
                self.polled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.chunks.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let chunk = self.chunks.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Poll::Ready(Ok(chunk.len()))
        }
    }

    fn spare_count() -> usize {
        SPARE.with(|s| s.borrow().len())
    }

    #[test]
    fn a_keeping_read_holds_its_storage_and_a_dropped_buffer_gives_it_back() {
        let mut source = Trickle {
            polled: false,
            chunks: vec![b"x"],
        };
        let mut b = ReadBuf::new(0, 64 * 1024);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(b.poll_fill_keeping(&mut cx, &mut source).is_pending());
        assert!(b.has_storage(), "kept across a read that found nothing");
        assert!(matches!(
            b.poll_fill_keeping(&mut cx, &mut source),
            Poll::Ready(Ok(1))
        ));
        assert_eq!(b.data(), b"x");
        let before = spare_count();
        drop(b);
        assert_eq!(
            spare_count(),
            before + 1,
            "the storage went back to the spare list"
        );
    }

    #[test]
    fn an_empty_buffer_owns_no_storage_while_it_waits() {
        let mut source = Trickle {
            polled: false,
            chunks: vec![b"hello", b" world"],
        };
        let mut b = ReadBuf::new(1024, 64 * 1024);
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(b.poll_fill(&mut cx, &mut source).is_pending());
        assert!(!b.has_storage(), "storage kept while waiting");
        assert!(matches!(
            b.poll_fill(&mut cx, &mut source),
            Poll::Ready(Ok(5))
        ));
        assert!(b.has_storage());
        assert_eq!(b.data(), b"hello");
        futures_lite::future::block_on(b.fill(&mut source)).unwrap();
        assert_eq!(b.data(), b"hello world");
        b.consume(11);
        assert_eq!(
            futures_lite::future::block_on(b.fill(&mut source)).unwrap(),
            0
        );
        b.release_if_idle();
        assert!(!b.has_storage());
    }

    #[test]
    fn refuses_to_grow_past_its_ceiling() {
        let mut b = ReadBuf::new(4, 8);
        b.end = 4;
        assert!(b.spare().is_ok());
        assert_eq!(b.data.len(), 8);
        b.end = 8;
        assert!(b.spare().is_err());
        b.consume(3);
        assert_eq!(b.spare().unwrap().len(), 3);
        assert_eq!(b.len(), 5);
    }
}
