//! The three moves every encoder in [`backend`](super::backend) and
//! [`frontend`](super::frontend) makes: open a message with its tag and a length
//! placeholder, write NUL-terminated strings, and fill the length in at the end.

use bytes::{BufMut, BytesMut};

/// Starts a message with `tag` and a placeholder length; returns the length's offset.
pub(crate) fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    begin_untagged(out)
}

/// Starts an untagged packet (startup, cancel): only the length placeholder.
pub(crate) fn begin_untagged(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_i32(0);
    at
}

/// Writes the final length (counting itself) of a message begun at `at`.
pub(crate) fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes `s` as a NUL-terminated string. A NUL inside would end the field early;
/// PostgreSQL never sends one, so it is dropped.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    if s.as_bytes().contains(&0) {
        out.extend(s.bytes().filter(|&b| b != 0));
    } else {
        out.extend_from_slice(s.as_bytes());
    }
    out.put_u8(0);
}
