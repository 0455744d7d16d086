//! Protocol errors: precise, allocation-free leaves. Each knows its SQLSTATE (08P01).

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("invalid length of startup packet: {len} bytes (the limit is {max})")]
    StartupTooLong { len: usize, max: usize },
    #[error("invalid length of startup packet: {len} bytes")]
    StartupTooShort { len: usize },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {what}")]
    MalformedStartup { what: &'static str },
    #[error("message of type '{}' is {len} bytes long, over the limit of {max}", char::from(*tag))]
    MessageTooLong { tag: u8, len: usize, max: usize },
    #[error("invalid message length {len} for message of type '{}'", char::from(*tag))]
    BadLength { tag: u8, len: u32 },
    #[error("malformed message of type '{}': {what}", char::from(*tag))]
    Malformed { tag: u8, what: &'static str },
    #[error("unexpected message of type '{}' during {state}", char::from(*tag))]
    Unexpected { tag: u8, state: &'static str },
}

impl ProtocolError {
    /// Every protocol error is a protocol violation.
    pub fn sqlstate(&self) -> &'static str {
        super::sqlstate::PROTOCOL_VIOLATION
    }
}
