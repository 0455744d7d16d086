//! The one place that decides when a server connection may leave its client.
//!
//! A server connection may go back to the pool only at a point where another client could
//! use it as if it were fresh: no transaction open, and no answer still owed to the
//! current client. [`TxTracker`] watches the tags flowing in both directions and answers
//! [`TxTracker::may_release`]; the session shell asks it and nothing else.
//!
//! Every Query, Sync and FunctionCall a client sends earns exactly one ReadyForQuery from
//! the server; extended-protocol messages (Parse, Bind, Execute, Describe, Close, Flush)
//! sent without a closing Sync leave the server mid-batch. So the server is releasable
//! when the last ReadyForQuery said idle (`I`), every request has been answered, and no
//! extended-protocol batch is open.

use super::{tag, TxStatus};
use crate::config::PoolMode;

/// Transaction and request bookkeeping for one client–server pairing.
#[derive(Debug, Clone)]
pub struct TxTracker {
    /// ReadyForQuery messages still owed by the server.
    owed_ready: u32,
    /// An extended-protocol batch was started and not yet closed by Sync.
    open_batch: bool,
    /// Status reported by the latest ReadyForQuery.
    status: TxStatus,
}

impl Default for TxTracker {
    fn default() -> Self {
        TxTracker {
            owed_ready: 0,
            open_batch: false,
            status: TxStatus::Idle,
        }
    }
}

/// What the session should do after a ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReady {
    /// Keep the server attached.
    Keep,
    /// Give the server back to the pool.
    Release,
    /// Statement mode saw a transaction block open: refuse it.
    StatementModeViolation,
}

impl TxTracker {
    /// Records a message the client sent to the server (its tag is enough).
    pub fn on_client_message(&mut self, tag: u8) {
        match tag {
            tag::QUERY | tag::FUNCTION_CALL => self.owed_ready += 1,
            tag::SYNC => {
                self.owed_ready += 1;
                self.open_batch = false;
            }
            tag::PARSE | tag::BIND | tag::EXECUTE | tag::DESCRIBE | tag::CLOSE | tag::FLUSH => {
                self.open_batch = true
            }
            _ => {}
        }
    }

    /// Records a ReadyForQuery from the server and says what to do next.
    pub fn on_ready_for_query(&mut self, status: TxStatus, mode: PoolMode) -> AfterReady {
        self.owed_ready = self.owed_ready.saturating_sub(1);
        self.status = status;
        if mode == PoolMode::Statement && status != TxStatus::Idle {
            return AfterReady::StatementModeViolation;
        }
        if self.may_release(mode) {
            AfterReady::Release
        } else {
            AfterReady::Keep
        }
    }

    /// True when the server could serve another client now.
    pub fn may_release(&self, mode: PoolMode) -> bool {
        mode != PoolMode::Session && self.is_quiet()
    }

    /// No transaction open, no answer owed, no batch open: the state in which a server
    /// connection can be reset and reused (also what session mode checks at disconnect).
    pub fn is_quiet(&self) -> bool {
        self.owed_ready == 0 && !self.open_batch && self.status == TxStatus::Idle
    }

    /// The status from the latest ReadyForQuery.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Answers still owed to the client.
    pub fn owed_ready(&self) -> u32 {
        self.owed_ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_query_releases_on_idle_ready() {
        let mut t = TxTracker::default();
        t.on_client_message(tag::QUERY);
        assert!(!t.may_release(PoolMode::Transaction));
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Transaction),
            AfterReady::Release
        );
    }

    #[test]
    fn open_transaction_is_kept() {
        let mut t = TxTracker::default();
        t.on_client_message(tag::QUERY);
        assert_eq!(
            t.on_ready_for_query(TxStatus::InTransaction, PoolMode::Transaction),
            AfterReady::Keep
        );
        t.on_client_message(tag::QUERY);
        assert_eq!(
            t.on_ready_for_query(TxStatus::Failed, PoolMode::Transaction),
            AfterReady::Keep
        );
        t.on_client_message(tag::QUERY);
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Transaction),
            AfterReady::Release
        );
    }

    #[test]
    fn pipelined_syncs_wait_for_the_last_ready() {
        let mut t = TxTracker::default();
        for _ in 0..2 {
            for tag in [tag::PARSE, tag::BIND, tag::EXECUTE, tag::SYNC] {
                t.on_client_message(tag);
            }
        }
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Transaction),
            AfterReady::Keep
        );
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Transaction),
            AfterReady::Release
        );
    }

    #[test]
    fn batch_without_sync_is_kept() {
        let mut t = TxTracker::default();
        t.on_client_message(tag::QUERY);
        t.on_client_message(tag::PARSE);
        t.on_client_message(tag::FLUSH);
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Transaction),
            AfterReady::Keep
        );
    }

    #[test]
    fn session_mode_never_releases() {
        let mut t = TxTracker::default();
        t.on_client_message(tag::QUERY);
        assert_eq!(
            t.on_ready_for_query(TxStatus::Idle, PoolMode::Session),
            AfterReady::Keep
        );
        assert!(t.is_quiet());
    }

    #[test]
    fn statement_mode_refuses_transaction_blocks() {
        let mut t = TxTracker::default();
        t.on_client_message(tag::QUERY);
        assert_eq!(
            t.on_ready_for_query(TxStatus::InTransaction, PoolMode::Statement),
            AfterReady::StatementModeViolation
        );
    }
}
