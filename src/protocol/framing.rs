//! Finding message boundaries in a byte stream without copying or re-encoding.
//!
//! Every message after startup is `tag: u8, len: i32 (counting itself), body`. The
//! [`Framer`] walks a buffer and reports, for each message, its tag and whether the caller
//! gets to see the whole body. Messages the caller does not ask to inspect may be larger than
//! the buffer: the framer hands out their bytes as they arrive ([`Step::Partial`]) and keeps
//! count of what is still to come, so a 50 MB DataRow streams through a 16 kB buffer.
//! Messages the caller does inspect (ReadyForQuery, ParameterStatus, …) are returned whole,
//! which needs the buffer to hold them; their size is capped by `max_message_len`.

use super::error::ProtocolError;

/// Size of the tag byte plus the length word.
pub const HEADER_LEN: usize = 5;

/// What the framer found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A whole message: `len` bytes (header included) starting at the front of the buffer.
    Message { tag: u8, body: &'a [u8], len: usize },
    /// The first `len` bytes of the buffer belong to a message that is not inspected and
    /// does not fit (or has not fully arrived); forward them. `tag` is `Some` on the first
    /// piece of a message (the piece that carries its header) and `None` on later ones.
    Partial { tag: Option<u8>, len: usize },
    /// Not enough bytes to say anything: read more.
    NeedMore,
}

/// Incremental message splitter for one direction of one connection.
#[derive(Debug, Clone)]
pub struct Framer {
    /// Body bytes of a streamed (partial) message still to come.
    remaining: usize,
    max_message_len: usize,
}

impl Framer {
    /// `max_message_len` caps the length word of every message (header excluded).
    pub fn new(max_message_len: usize) -> Self {
        Framer {
            remaining: 0,
            max_message_len,
        }
    }

    /// True when the stream is at a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Reads the header of the message at the front of `buf` (at a boundary): its tag and
    /// its whole length, header included, checked against the limit. `None` until the
    /// five header bytes are there.
    pub fn header(&self, buf: &[u8]) -> Result<Option<(u8, usize)>, ProtocolError> {
        debug_assert!(self.at_boundary());
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let tag = header[0];
        let declared = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if declared < 4 {
            return Err(ProtocolError::BadLength { tag, len: declared });
        }
        let body_len = (declared - 4) as usize;
        if body_len > self.max_message_len {
            return Err(ProtocolError::MessageTooLong {
                tag,
                len: body_len,
                max: self.max_message_len,
            });
        }
        Ok(Some((tag, HEADER_LEN + body_len)))
    }

    /// The caller handled the first bytes of a message itself and streams the rest:
    /// `remaining` bytes of it are still to come, handed out by [`Framer::step`] as
    /// [`Step::Partial`] pieces.
    pub fn stream_rest(&mut self, remaining: usize) {
        debug_assert!(self.at_boundary());
        self.remaining = remaining;
    }

    /// Looks at the front of `buf`. `inspect(tag)` says whether the caller needs the
    /// message whole; if not, and it is not all there, it is streamed in pieces. The caller
    /// advances its buffer by the `len` of the returned step.
    pub fn step<'a>(
        &mut self,
        buf: &'a [u8],
        inspect: impl Fn(u8) -> bool,
    ) -> Result<Step<'a>, ProtocolError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let len = self.remaining.min(buf.len());
            self.remaining -= len;
            return Ok(Step::Partial { tag: None, len });
        }
        let Some((tag, total)) = self.header(buf)? else {
            return Ok(Step::NeedMore);
        };
        if let Some(whole) = buf.get(..total) {
            return Ok(Step::Message {
                tag,
                body: &whole[HEADER_LEN..],
                len: total,
            });
        }
        if inspect(tag) {
            return Ok(Step::NeedMore);
        }
        let len = buf.len();
        self.remaining = total - len;
        Ok(Step::Partial {
            tag: Some(tag),
            len,
        })
    }
}

/// Reads a message's tag and body from the front of `buf` when it is whole (for
/// login-phase code that always needs messages whole).
#[allow(clippy::type_complexity)]
pub fn split_message(
    buf: &[u8],
    max_message_len: usize,
) -> Result<Option<(u8, &[u8], usize)>, ProtocolError> {
    match Framer::new(max_message_len).step(buf, |_| true)? {
        Step::Message { tag, body, len } => Ok(Some((tag, body, len))),
        Step::Partial { .. } | Step::NeedMore => Ok(None),
    }
}

#[cfg(test)]
mod tests;
