//! Untagged packets a client may send first: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest. They share a layout (Int32 length, Int32 code, payload) and are capped at
//! [`MAX_STARTUP_PACKET_LEN`] before anything is allocated.

use super::error::ProtocolError;
use super::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_STARTUP_PACKET_LEN, PROTOCOL_3_0,
    SSL_REQUEST_CODE,
};

/// A decoded untagged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// A StartupMessage for protocol 3.x. `minor` above 0 asks for a newer minor version,
    /// which pgring answers with NegotiateProtocolVersion.
    Startup {
        minor: u16,
        params: StartupParams,
    },
    SslRequest,
    GssEncRequest,
    CancelRequest(CancelKey),
}

/// The (process id, secret key) pair of BackendKeyData / CancelRequest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub process_id: i32,
    pub secret_key: i32,
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelKey")
            .field("process_id", &self.process_id)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// The name/value pairs of a StartupMessage, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    pairs: Vec<(String, String)>,
}

impl StartupParams {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        StartupParams { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The user name; required by the protocol.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The database name, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }
}

/// Decodes one untagged packet from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((packet, consumed)))` once the
/// whole packet is there. A declared length over [`MAX_STARTUP_PACKET_LEN`] is refused as
/// soon as the four length bytes arrive, before waiting for (or allocating) the rest.
pub fn decode_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, ProtocolError> {
    let Some(len_bytes) = buf.get(0..4) else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(ProtocolError::StartupTooLong {
            len,
            max: MAX_STARTUP_PACKET_LEN,
        });
    }
    if len < 8 {
        return Err(ProtocolError::StartupTooShort { len });
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let payload = &packet[8..];
    let decoded = match code {
        SSL_REQUEST_CODE if payload.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE if payload.is_empty() => StartupPacket::GssEncRequest,
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            return Err(ProtocolError::MalformedStartup {
                what: "encryption request with a payload",
            })
        }
        CANCEL_REQUEST_CODE => {
            if payload.len() != 8 {
                return Err(ProtocolError::MalformedStartup {
                    what: "cancel request of the wrong length",
                });
            }
            StartupPacket::CancelRequest(CancelKey {
                process_id: i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]),
                secret_key: i32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != (PROTOCOL_3_0 >> 16) as u16 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            StartupPacket::Startup {
                minor,
                params: parse_params(payload)?,
            }
        }
    };
    Ok(Some((decoded, len)))
}

/// Parses `name\0value\0 … \0`. Names and values must be UTF-8.
fn parse_params(mut payload: &[u8]) -> Result<StartupParams, ProtocolError> {
    let mut pairs = Vec::new();
    loop {
        let (name, rest) = split_cstr(payload).ok_or(ProtocolError::MalformedStartup {
            what: "missing terminator",
        })?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(ProtocolError::MalformedStartup {
                    what: "bytes after the final terminator",
                });
            }
            break;
        }
        let (value, rest) = split_cstr(rest).ok_or(ProtocolError::MalformedStartup {
            what: "parameter without a value",
        })?;
        let name = std::str::from_utf8(name).map_err(|_| ProtocolError::MalformedStartup {
            what: "parameter name is not UTF-8",
        })?;
        let value = std::str::from_utf8(value).map_err(|_| ProtocolError::MalformedStartup {
            what: "parameter value is not UTF-8",
        })?;
        pairs.push((name.to_owned(), value.to_owned()));
        payload = rest;
    }
    if !pairs.iter().any(|(n, _)| n == "user") {
        return Err(ProtocolError::MalformedStartup {
            what: "no PostgreSQL user name specified in startup packet",
        });
    }
    Ok(StartupParams { pairs })
}

/// Splits a NUL-terminated string off the front of `buf`.
pub(crate) fn split_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests;
