//! The PostgreSQL frontend/backend protocol (version 3.0), sans-IO.
//!
//! Bytes go in, typed messages and byte counts come out. Nothing in this module opens a
//! socket, reads a clock, draws a random number or reads the config: every input is an
//! argument, so every path is testable without a network (see the tests beside each file).
//!
//! ```text
//!   client bytes ──► startup::decode_startup ──► StartupPacket (login phase)
//!   client bytes ──► session::Session::handle_client ──► plan for the server (forward,
//!                    inject a Parse, rename a statement) and pgring's own answers
//!   server bytes ──► session::Session::handle_server ──► plan for the client (forward,
//!                    swallow), ParameterStatus, and whether the server may be released
//!   pgring's own replies ◄── backend::* / frontend::* encoders
//! ```
//!
//! Pass-through traffic is never re-encoded: [`framing::Framer`] only finds frame
//! boundaries and hands the caller the frames it asked to inspect; everything else is
//! forwarded as the byte ranges it arrived in.
//!
//! Read next: [`framing`] for the frame scanner, [`session`] for the one place that decides
//! when a server connection may go back to the pool.

pub mod backend;
mod encode;
pub mod error;
pub mod framing;
pub mod frontend;
pub mod params;
pub mod session;
pub mod startup;

pub use error::ProtocolError;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// PostgreSQL's own limit on the length of a startup packet.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// Message tags (the first byte of every message after startup).
pub mod tag {
    // Frontend (client → server).
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD_MESSAGE: u8 = b'p';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';

    // Backend (server → client).
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const NO_DATA: u8 = b'n';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// SQLSTATE codes pgring sends itself.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
}

/// The transaction status byte of ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}
