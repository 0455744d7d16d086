//! Frontend messages (client → server): encoders for the ones pgring sends to PostgreSQL
//! (startup, passwords, its own queries, cancel requests) and decoders for the login
//! messages pgring reads from clients.
//!
//! pgring's own queries use the simple protocol, except those that carry a value from a
//! client (the user name of an `auth_query`): those go through the extended protocol
//! ([`parse`], [`bind_text`], [`execute`], [`sync`]), so the value travels as a bound
//! parameter and is never spliced into SQL text.

use bytes::{BufMut, BytesMut};

use super::encode::{begin, begin_untagged, finish, put_cstr};
use super::error::ProtocolError;
use super::startup::{split_cstr, CancelKey};
use super::{tag, CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};

/// StartupMessage for protocol 3.0.
pub fn startup_message<'a>(
    out: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let at = begin_untagged(out);
    out.put_i32(PROTOCOL_3_0);
    for (name, value) in params {
        put_cstr(out, name);
        put_cstr(out, value);
    }
    out.put_u8(0);
    finish(out, at);
}

pub fn ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(SSL_REQUEST_CODE);
}

pub fn cancel_request(out: &mut BytesMut, key: CancelKey) {
    out.put_i32(16);
    out.put_i32(CANCEL_REQUEST_CODE);
    out.put_i32(key.process_id);
    out.put_i32(key.secret_key);
}

/// PasswordMessage carrying a cleartext or md5 password (NUL-terminated).
pub fn password_message(out: &mut BytesMut, password: &[u8]) {
    let at = begin(out, tag::PASSWORD_MESSAGE);
    out.put_slice(password);
    out.put_u8(0);
    finish(out, at);
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(out, tag::PASSWORD_MESSAGE);
    put_cstr(out, mechanism);
    out.put_i32(data.len() as i32);
    out.put_slice(data);
    finish(out, at);
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    let at = begin(out, tag::PASSWORD_MESSAGE);
    out.put_slice(data);
    finish(out, at);
}

/// A simple-protocol Query.
pub fn query(out: &mut BytesMut, sql: &str) {
    let at = begin(out, tag::QUERY);
    put_cstr(out, sql);
    finish(out, at);
}

/// Parse: prepares `sql` as statement `name` (`""` = the unnamed statement), leaving every
/// parameter's type for the server to infer.
pub fn parse(out: &mut BytesMut, name: &str, sql: &str) {
    let at = begin(out, tag::PARSE);
    put_cstr(out, name);
    put_cstr(out, sql);
    out.put_i16(0);
    finish(out, at);
}

/// Bind: binds `params` (text format; `None` is SQL NULL) to statement `statement` as
/// portal `portal`, asking for every result column in text format. Values are sent with
/// their length, so any byte (quotes, backslashes, NULs) arrives as data.
///
/// PostgreSQL takes at most 65535 parameters; pgring sends one or two, so the count is
/// truncated rather than checked.
pub fn bind_text(out: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&str>]) {
    let at = begin(out, tag::BIND);
    put_cstr(out, portal);
    put_cstr(out, statement);
    // No parameter format codes: all text.
    out.put_i16(0);
    out.put_u16(params.len() as u16);
    for param in params {
        match param {
            Some(value) => {
                out.put_i32(value.len() as i32);
                out.put_slice(value.as_bytes());
            }
            None => out.put_i32(-1),
        }
    }
    // No result format codes: all text.
    out.put_i16(0);
    finish(out, at);
}

/// Execute: runs portal `portal`, returning at most `max_rows` rows (0 = all).
pub fn execute(out: &mut BytesMut, portal: &str, max_rows: i32) {
    let at = begin(out, tag::EXECUTE);
    put_cstr(out, portal);
    out.put_i32(max_rows);
    finish(out, at);
}

/// Sync: ends an extended-protocol batch; the server answers ReadyForQuery.
pub fn sync(out: &mut BytesMut) {
    let at = begin(out, tag::SYNC);
    finish(out, at);
}

pub fn terminate(out: &mut BytesMut) {
    let at = begin(out, tag::TERMINATE);
    finish(out, at);
}

/// The password of a PasswordMessage: the bytes before the terminating NUL.
pub fn parse_password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    match split_cstr(body) {
        Some((password, [])) => Ok(password),
        _ => Err(ProtocolError::Malformed {
            tag: tag::PASSWORD_MESSAGE,
            what: "password not NUL-terminated",
        }),
    }
}

/// A SASLInitialResponse: the chosen mechanism and the client-first message.
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let malformed = |what| ProtocolError::Malformed {
        tag: tag::PASSWORD_MESSAGE,
        what,
    };
    let (mechanism, rest) = split_cstr(body).ok_or(malformed("mechanism name"))?;
    let mechanism = std::str::from_utf8(mechanism).map_err(|_| malformed("mechanism name"))?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(malformed("data length"))?;
    let len = i32::from_be_bytes(len_bytes);
    let data = &rest[4..];
    if len == -1 && data.is_empty() {
        return Ok((mechanism, &[]));
    }
    if usize::try_from(len).ok() != Some(data.len()) {
        return Err(malformed("data length"));
    }
    Ok((mechanism, data))
}

/// Quotes `value` as an SQL string literal (for the `SET` statements pgring sends to
/// align a server's parameters with a client's).
pub fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    let has_backslash = value.contains('\\');
    if has_backslash {
        quoted.push('E');
    }
    quoted.push('\'');
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            '\0' => {}
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// Quotes `name` as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' => quoted.push_str("\"\""),
            '\0' => {}
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests;
