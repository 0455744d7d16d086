//! The error a session ends with, and the one function that turns it into an
//! ErrorResponse.
//!
//! Leaves (protocol, I/O, auth) are typed where they happen; at the session boundary they
//! become a [`SessionError`] that knows whose fault it was ([`Fault`]), the SQLSTATE the
//! client sees, and a message a person understands.

use std::io;

use bytes::BytesMut;

use crate::config::ServerAddress;
use crate::protocol::backend::{self, Severity};
use crate::protocol::session::SessionFault;
use crate::protocol::{sqlstate, ProtocolError};

/// Who caused an error: decides logging and whether the server connection survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client broke the protocol, failed to authenticate or went away.
    Client,
    /// The server failed, closed or misbehaved.
    Server,
    /// pgring's configuration cannot serve the request.
    Config,
    /// A limit or timeout of pgring's.
    Limit,
}

/// What went wrong, for the decisions taken on an error (the SQLSTATE is for the
/// client; code decides on this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The connection broke or was closed: it cannot be used any more.
    Disconnected,
    /// A password or SCRAM proof was refused (the client's, or pgring's at the server).
    PasswordRefused,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SessionError {
    pub fault: Fault,
    pub cause: Cause,
    pub sqlstate: String,
    pub message: String,
}

impl SessionError {
    pub fn new(fault: Fault, sqlstate: &str, message: impl Into<String>) -> Self {
        SessionError {
            fault,
            cause: Cause::Other,
            sqlstate: sqlstate.to_owned(),
            message: message.into(),
        }
    }

    /// The same error, with its cause named.
    pub fn because(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }

    /// An ErrorResponse of PostgreSQL's as an error of the session: the cause is read
    /// from its SQLSTATE (28P01: a refused password).
    pub fn from_server(sqlstate: &str, message: impl Into<String>) -> Self {
        let cause = if sqlstate == sqlstate::INVALID_PASSWORD {
            Cause::PasswordRefused
        } else {
            Cause::Other
        };
        SessionError::new(Fault::Server, sqlstate, message).because(cause)
    }

    pub fn client_protocol(e: ProtocolError) -> Self {
        SessionError::new(Fault::Client, e.sqlstate(), e.to_string())
    }

    pub fn server_protocol(e: ProtocolError) -> Self {
        SessionError::new(
            Fault::Server,
            sqlstate::PROTOCOL_VIOLATION,
            format!("server sent an invalid message: {e}"),
        )
    }

    pub fn server_io(e: io::Error) -> Self {
        SessionError::new(
            Fault::Server,
            sqlstate::CONNECTION_FAILURE,
            format!("server connection failed: {e}"),
        )
        .because(Cause::Disconnected)
    }

    pub fn server_closed() -> Self {
        SessionError::new(
            Fault::Server,
            sqlstate::CONNECTION_FAILURE,
            "server closed the connection unexpectedly",
        )
        .because(Cause::Disconnected)
    }

    pub fn server_connect(address: &ServerAddress, e: io::Error) -> Self {
        SessionError::new(
            Fault::Server,
            sqlstate::CONNECTION_FAILURE,
            format!(
                "could not connect to server at {}: {e}",
                crate::server::describe(address)
            ),
        )
        .because(Cause::Disconnected)
    }

    pub fn client_io(e: io::Error) -> Self {
        SessionError::new(
            Fault::Client,
            sqlstate::CONNECTION_FAILURE,
            format!("client connection failed: {e}"),
        )
        .because(Cause::Disconnected)
    }

    pub fn client_closed() -> Self {
        SessionError::new(
            Fault::Client,
            sqlstate::CONNECTION_FAILURE,
            "client closed the connection",
        )
        .because(Cause::Disconnected)
    }

    /// Writes this error as the FATAL ErrorResponse a client receives before the
    /// connection is closed.
    pub fn encode_fatal(&self, out: &mut BytesMut) {
        backend::error_response(out, Severity::Fatal, &self.sqlstate, &self.message, None);
    }

    /// A session timeout expired (the server, if any, is closed).
    pub fn timeout(which: crate::protocol::session::Timeout) -> Self {
        use crate::protocol::session::Timeout;
        let (code, message) = match which {
            Timeout::Query => (
                sqlstate::QUERY_CANCELED,
                "query_timeout: the query ran too long",
            ),
            Timeout::IdleTransaction => (
                sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                "idle_transaction_timeout: the transaction was idle too long",
            ),
            Timeout::ClientIdle => (
                sqlstate::IDLE_SESSION_TIMEOUT,
                "client_idle_timeout: the client was idle too long",
            ),
        };
        SessionError::new(Fault::Limit, code, message)
    }

    /// Whether the client should be told (it is not when the client itself is gone).
    pub fn client_reachable(&self) -> bool {
        !(self.fault == Fault::Client && self.cause == Cause::Disconnected)
    }
}

impl From<SessionFault> for SessionError {
    fn from(fault: SessionFault) -> Self {
        match fault {
            SessionFault::Client(e) => SessionError::client_protocol(e),
            SessionFault::TooLongToInspect { .. } => SessionError::new(
                Fault::Client,
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                fault.to_string(),
            ),
            SessionFault::SyncInCopyData => SessionError::new(
                Fault::Client,
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "{fault}: with prepared statements tracked, pgring cannot tell whether \
                     the server answers it"
                ),
            ),
            SessionFault::Server(e) => SessionError::server_protocol(e),
            SessionFault::Desync(d) => {
                SessionError::new(Fault::Server, sqlstate::PROTOCOL_VIOLATION, d.to_string())
            }
        }
    }
}
