//! Backend messages (server → client): encoders for the ones pgring sends to its clients,
//! decoders for the ones pgring reads from PostgreSQL.

use bytes::{BufMut, BytesMut};

use super::encode::{begin, finish, put_cstr};
use super::error::ProtocolError;
use super::startup::{split_cstr, CancelKey};
use super::tag;
use super::TxStatus;

/// Severity of an ErrorResponse / NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Warning,
    Notice,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Log => "LOG",
        }
    }
}

/// ErrorResponse (or NoticeResponse when `notice`) with the fields pgring fills.
pub fn error_response(
    out: &mut BytesMut,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) {
    let notice = matches!(
        severity,
        Severity::Warning | Severity::Notice | Severity::Log
    );
    let at = begin(
        out,
        if notice {
            tag::NOTICE_RESPONSE
        } else {
            tag::ERROR_RESPONSE
        },
    );
    out.put_u8(b'S');
    put_cstr(out, severity.as_str());
    out.put_u8(b'V');
    put_cstr(out, severity.as_str());
    out.put_u8(b'C');
    put_cstr(out, sqlstate);
    out.put_u8(b'M');
    put_cstr(out, message);
    if let Some(detail) = detail {
        out.put_u8(b'D');
        put_cstr(out, detail);
    }
    out.put_u8(0);
    finish(out, at);
}

/// The Authentication request kinds pgring sends or receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// The mechanisms offered, in order.
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue {
        data: &'a [u8],
    },
    SaslFinal {
        data: &'a [u8],
    },
    /// Kerberos, GSS, SSPI and others pgring does not speak.
    Unsupported {
        code: i32,
    },
}

pub fn authentication(out: &mut BytesMut, auth: &Authentication<'_>) {
    let at = begin(out, tag::AUTHENTICATION);
    match auth {
        Authentication::Ok => out.put_i32(0),
        Authentication::CleartextPassword => out.put_i32(3),
        Authentication::Md5Password { salt } => {
            out.put_i32(5);
            out.put_slice(salt);
        }
        Authentication::Sasl { mechanisms } => {
            out.put_i32(10);
            for m in mechanisms {
                put_cstr(out, m);
            }
            out.put_u8(0);
        }
        Authentication::SaslContinue { data } => {
            out.put_i32(11);
            out.put_slice(data);
        }
        Authentication::SaslFinal { data } => {
            out.put_i32(12);
            out.put_slice(data);
        }
        Authentication::Unsupported { code } => out.put_i32(*code),
    }
    finish(out, at);
}

/// Decodes the body of an Authentication message.
pub fn parse_authentication(body: &[u8]) -> Result<Authentication<'_>, ProtocolError> {
    let malformed = |what| ProtocolError::Malformed {
        tag: tag::AUTHENTICATION,
        what,
    };
    let code = read_i32(body).ok_or(malformed("missing code"))?;
    let rest = &body[4..];
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt: [u8; 4] = rest.try_into().map_err(|_| malformed("md5 salt"))?;
            Authentication::Md5Password { salt }
        }
        10 => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (name, tail) = split_cstr(rest).ok_or(malformed("mechanism list"))?;
                if name.is_empty() {
                    break;
                }
                mechanisms
                    .push(std::str::from_utf8(name).map_err(|_| malformed("mechanism name"))?);
                rest = tail;
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue { data: rest },
        12 => Authentication::SaslFinal { data: rest },
        code => Authentication::Unsupported { code },
    })
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let at = begin(out, tag::PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    finish(out, at);
}

/// Decodes a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let malformed = ProtocolError::Malformed {
        tag: tag::PARAMETER_STATUS,
        what: "name/value",
    };
    let (name, rest) = split_cstr(body).ok_or(malformed.clone())?;
    let (value, _) = split_cstr(rest).ok_or(malformed.clone())?;
    Ok((
        std::str::from_utf8(name).map_err(|_| malformed.clone())?,
        std::str::from_utf8(value).map_err(|_| malformed)?,
    ))
}

pub fn backend_key_data(out: &mut BytesMut, key: CancelKey) {
    let at = begin(out, tag::BACKEND_KEY_DATA);
    out.put_i32(key.process_id);
    out.put_i32(key.secret_key);
    finish(out, at);
}

pub fn parse_backend_key_data(body: &[u8]) -> Result<CancelKey, ProtocolError> {
    if body.len() != 8 {
        return Err(ProtocolError::Malformed {
            tag: tag::BACKEND_KEY_DATA,
            what: "key length",
        });
    }
    Ok(CancelKey {
        process_id: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        secret_key: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    })
}

pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    let at = begin(out, tag::READY_FOR_QUERY);
    out.put_u8(status.as_byte());
    finish(out, at);
}

pub fn parse_ready_for_query(body: &[u8]) -> Result<TxStatus, ProtocolError> {
    match body {
        [b] => TxStatus::from_byte(*b),
        _ => None,
    }
    .ok_or(ProtocolError::Malformed {
        tag: tag::READY_FOR_QUERY,
        what: "transaction status",
    })
}

/// NegotiateProtocolVersion: the newest minor version pgring supports (0) and the
/// `_pq_.` options it did not recognise.
pub fn negotiate_protocol_version(out: &mut BytesMut, newest_minor: i32, unrecognized: &[&str]) {
    let at = begin(out, tag::NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32(newest_minor);
    out.put_i32(unrecognized.len() as i32);
    for option in unrecognized {
        put_cstr(out, option);
    }
    finish(out, at);
}

/// The fields of an ErrorResponse or NoticeResponse that pgring logs or acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn parse_error_response(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, tail)) = split_cstr(tail) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'V' => fields.severity = value,
            b'S' if fields.severity.is_empty() => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            _ => {}
        }
        rest = tail;
    }
    fields
}

/// DataRow: one row of column values (`None` = SQL NULL).
pub fn data_row(out: &mut BytesMut, values: &[Option<&[u8]>]) {
    let at = begin(out, tag::DATA_ROW);
    out.put_u16(values.len() as u16);
    for value in values {
        match value {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    finish(out, at);
}

/// Decodes a DataRow body into its column values (`None` = SQL NULL), borrowed from the
/// body. Every length is checked against what is left of the body, so a hostile count or
/// length cannot make it allocate or read past the message.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let malformed = |what| ProtocolError::Malformed {
        tag: tag::DATA_ROW,
        what,
    };
    let count = body
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(malformed("column count"))?;
    let mut rest = &body[2..];
    // Each column takes at least its 4-byte length.
    let mut values = Vec::with_capacity(usize::from(count).min(rest.len() / 4));
    for _ in 0..count {
        let len = read_i32(rest).ok_or(malformed("column length"))?;
        rest = &rest[4..];
        if len == -1 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| malformed("column length"))?;
        let value = rest.get(..len).ok_or(malformed("column value"))?;
        values.push(Some(value));
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(malformed("bytes after the last column"));
    }
    Ok(values)
}

/// The command tag of a CommandComplete (`SELECT 1`, `UPDATE 3`).
pub fn parse_command_complete(body: &[u8]) -> Result<&str, ProtocolError> {
    let malformed = ProtocolError::Malformed {
        tag: tag::COMMAND_COMPLETE,
        what: "command tag",
    };
    match split_cstr(body) {
        Some((command, [])) => std::str::from_utf8(command).map_err(|_| malformed),
        _ => Err(malformed),
    }
}

fn read_i32(buf: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(buf.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests;
