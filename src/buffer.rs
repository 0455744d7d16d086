//! [`ReadBuf`]: a growable read buffer with a hard ceiling.
//!
//! Bytes are read into the free tail and consumed from the front; consumed space is
//! reclaimed by moving the live bytes down. The buffer grows only when the bytes it holds
//! must be seen whole (a login message, a ReadyForQuery), and never past its ceiling, so a
//! peer cannot make pgring allocate by announcing a large length.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

/// Initial size of a connection's read buffer.
pub const INITIAL_READ_BUF: usize = 8 * 1024;

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

impl ReadBuf {
    pub fn new(initial: usize, ceiling: usize) -> Self {
        ReadBuf {
            data: vec![0; initial.min(ceiling)],
            start: 0,
            end: 0,
            ceiling,
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
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
        let spare = self
            .spare()
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        let n = source.read(spare).await?;
        self.end += n;
        Ok(n)
    }

    /// Gives back memory above the initial size once the buffer is empty (after a large
    /// message went through).
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.data.len() > INITIAL_READ_BUF {
            self.data.truncate(INITIAL_READ_BUF);
            self.data.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
