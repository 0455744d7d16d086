//! What the server still owes the client, message by message.
//!
//! PostgreSQL answers the messages of a connection strictly in order, and each kind of
//! message has a known answer: Parse a ParseComplete, Bind a BindComplete, Execute rows
//! then CommandComplete (or a COPY), Sync and Query a ReadyForQuery, and so on. An
//! ErrorResponse in the extended protocol makes the server skip everything up to the
//! next Sync. [`Pipeline`] keeps one [`Expect`] per message sent and not yet answered, so
//! that pgring knows at every server message which client message it belongs to: which
//! ParseComplete answers a Parse pgring injected (and is swallowed), where a
//! ParseComplete pgring answers itself goes in the stream, and — the point of it all —
//! when nothing at all is owed, which is the only time a server may change hands.
//!
//! COPY FROM STDIN needs care: the server ignores Sync and Flush while it is in copy-in
//! mode (libpq and tokio-postgres send a Sync right behind the Execute of a COPY, and
//! another after CopyDone), so those Syncs earn no ReadyForQuery. The pipeline drops
//! the Syncs the server is known to read in copy-in mode. A Sync sent between CopyData
//! messages is different: if the server failed the COPY on data before it, the server
//! reads that Sync normally and answers it, and pgring cannot tell which happened. The
//! pipeline then marks itself `uncertain`, and such a server is never handed to another
//! client.

use std::collections::VecDeque;
use std::rc::Rc;

use super::prepared::Statement;
use crate::protocol::TxStatus;

/// How the answer to a message reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The client sent it; the server's answer goes to the client.
    Forward,
    /// pgring sent it on its own; the server's answer is swallowed.
    Swallow,
    /// pgring answers it itself (it never reached the server), once every answer before
    /// it has been forwarded.
    Answer,
}

/// What a message did to the server's prepared statements, undone if the server skips
/// or fails it.
#[derive(Debug, Clone)]
pub enum Note {
    None,
    /// A Parse (pgring's operation `op`) that prepares this statement on the server,
    /// right behind a Close of it when `after_close`.
    Prepared {
        statement: Rc<Statement>,
        op: u64,
        after_close: bool,
    },
    /// A Close (operation `op`) that evicts this statement from the server.
    Evicted {
        statement: Rc<Statement>,
        op: u64,
    },
}

/// What a client's Parse or Close of a named statement did to its names, undone if the
/// server skips or fails it (as PostgreSQL would not have made or closed the statement).
#[derive(Debug, Clone)]
pub struct Named {
    pub name: Box<[u8]>,
    pub statement: Rc<Statement>,
}

/// One client message (or a message pgring sent) and the answer it is owed.
#[derive(Debug, Clone)]
pub enum Expect {
    /// ParseComplete.
    Parse {
        reply: Reply,
        note: Note,
        named: Option<Box<Named>>,
    },
    /// BindComplete. A Bind of a tracked statement names it, so that a stale plan
    /// (`cached plan must not change result type`) can be told apart.
    Bind { statement: Option<Rc<Statement>> },
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// DataRows, then CommandComplete, EmptyQueryResponse or PortalSuspended (or a COPY).
    Execute,
    /// CloseComplete.
    Close {
        reply: Reply,
        note: Note,
        named: Option<Box<Named>>,
    },
    /// ReadyForQuery.
    Sync,
    /// Anything, up to ReadyForQuery.
    Query,
    /// FunctionCallResponse, then ReadyForQuery.
    FunctionCall,
    /// CopyDone or CopyFail: no answer of its own; marks where a COPY ends.
    CopyEnd,
    /// One or more CopyData: no answer; marks that data went before what follows.
    CopyData,
}

impl Expect {
    /// Markers owe nothing; they only keep their place in the order.
    fn is_marker(&self) -> bool {
        matches!(self, Expect::CopyEnd | Expect::CopyData)
    }

    /// Messages of the extended protocol, whose failure makes the server skip to Sync.
    fn is_extended(&self) -> bool {
        matches!(
            self,
            Expect::Parse { .. }
                | Expect::Bind { .. }
                | Expect::DescribeStatement
                | Expect::DescribePortal
                | Expect::Execute
                | Expect::Close { .. }
        )
    }
}

/// The most messages pgring keeps track of for one client before it stops reading from
/// it until the server catches up (each is one small queue entry).
pub const MAX_IN_FLIGHT: usize = 16 * 1024;

/// The messages in flight on one client–server pairing, and what the server said last.
#[derive(Debug, Default)]
pub struct Pipeline {
    queue: VecDeque<Expect>,
    /// The status of the latest ReadyForQuery.
    status: Status,
    /// The server is in copy-in mode and the client has not ended the copy yet.
    client_in_copy: bool,
    /// The client sent CopyData in the current copy-in.
    copy_data_sent: bool,
    /// A Sync or Flush was sent amid COPY data: the count of answers owed is unknown.
    uncertain: bool,
    /// The front Describe of a statement has had its ParameterDescription.
    described: bool,
    /// The server failed an extended-protocol message and reads nothing but a Sync
    /// until one comes: messages the client sends meanwhile are owed no answer.
    skipping: bool,
    /// Extended-protocol messages went out since the last Sync the server reads: the
    /// server may be in an implicit transaction that only that Sync ends, even with
    /// every answer in.
    open_batch: bool,
    /// Entries in the queue that the server does not answer (markers, and answers
    /// pgring gives itself): when there are none, [`Pipeline::pop_answered`] has nothing
    /// to look for.
    unanswered: u32,
}

/// Whether the server sends nothing for this entry.
fn owes_nothing(e: &Expect) -> bool {
    matches!(
        e,
        Expect::CopyEnd
            | Expect::CopyData
            | Expect::Parse {
                reply: Reply::Answer,
                ..
            }
            | Expect::Close {
                reply: Reply::Answer,
                ..
            }
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub TxStatus);

impl Default for Status {
    fn default() -> Self {
        Status(TxStatus::Idle)
    }
}

/// What a server message means for the pipeline.
#[derive(Debug)]
pub enum Seen {
    /// Part of the answer to the front message, or asynchronous: forward it.
    Forward,
    /// The front message's answer is complete with this message (popped and returned).
    Completed(Expect),
    /// A ReadyForQuery: the Sync, Query or FunctionCall it answers has been popped.
    Ready(TxStatus),
}

/// The server sent something the pipeline does not expect at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server sent a message of type '{}' where pgring expected {expected}", char::from(*tag))]
pub struct Desync {
    pub tag: u8,
    pub expected: &'static str,
}

impl Pipeline {
    pub fn status(&self) -> TxStatus {
        self.status.0
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the client is in the middle of COPY data the server is reading.
    pub fn client_in_copy(&self) -> bool {
        self.client_in_copy
    }

    pub fn is_uncertain(&self) -> bool {
        self.uncertain
    }

    /// The server is skipping everything up to the next Sync.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// Nothing owed, no transaction, no COPY under way, and the count is known.
    pub fn is_quiet(&self) -> bool {
        self.queue.is_empty()
            && self.status.0 == TxStatus::Idle
            && !self.client_in_copy
            && !self.uncertain
            && !self.open_batch
    }

    /// Answers owed to the client that come from the server (for `query_timeout`).
    pub fn owes(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Forgets everything in flight (the server was rolled back and replaced).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.status = Status::default();
        self.client_in_copy = false;
        self.copy_data_sent = false;
        self.uncertain = false;
        self.described = false;
        self.skipping = false;
        self.open_batch = false;
        self.unanswered = 0;
    }

    /// Records a client message by its tag, for the messages whose answer needs nothing
    /// but the tag. Sync and Flush during copy-in are read and ignored by the server.
    pub fn on_client_tag(&mut self, tag: u8) {
        use crate::protocol::tag as t;
        if self.skipping {
            if tag == t::SYNC {
                self.skipping = false;
                self.open_batch = false;
                self.queue.push_back(Expect::Sync);
            }
            return;
        }
        if self.client_in_copy {
            match tag {
                t::COPY_DATA => self.copy_data_sent = true,
                t::SYNC | t::FLUSH => {
                    if self.copy_data_sent {
                        // The server may have failed the COPY on earlier data, in which
                        // case it answers this Sync; pgring cannot tell.
                        self.uncertain = true;
                    }
                }
                _ => {
                    // CopyDone and CopyFail end the copy; any other message aborts it
                    // (the server answers with an error and reads on normally).
                    self.client_in_copy = false;
                    self.copy_data_sent = false;
                    self.push_tag(tag);
                }
            }
            return;
        }
        self.push_tag(tag);
    }

    fn push_tag(&mut self, tag: u8) {
        use crate::protocol::tag as t;
        match tag {
            t::SYNC => self.open_batch = false,
            t::BIND | t::EXECUTE | t::FLUSH | t::PARSE | t::DESCRIBE | t::CLOSE => {
                self.open_batch = true
            }
            _ => {}
        }
        let expect = match tag {
            t::COPY_DONE | t::COPY_FAIL => {
                self.unanswered += 1;
                Expect::CopyEnd
            }
            t::QUERY => Expect::Query,
            t::FUNCTION_CALL => Expect::FunctionCall,
            t::SYNC => Expect::Sync,
            t::BIND => Expect::Bind { statement: None },
            t::EXECUTE => Expect::Execute,
            t::COPY_DATA => {
                if matches!(self.queue.back(), Some(Expect::CopyData) | None) {
                    // Outside a COPY the server ignores CopyData; one marker in a row is
                    // enough to tell that data went before what follows.
                    return;
                }
                self.unanswered += 1;
                Expect::CopyData
            }
            // Flush is answered by nothing; unknown tags make the server fail the
            // connection, which ends the session.
            _ => return,
        };
        self.queue.push_back(expect);
    }

    /// The Bind just recorded binds `statement`.
    pub fn bound(&mut self, statement: Rc<Statement>) {
        if let Some(Expect::Bind { statement: slot }) = self.queue.back_mut() {
            *slot = Some(statement);
        }
    }

    /// Records a message whose answer the caller describes (Parse, Describe, Close).
    /// Not called while the server is skipping (see [`Pipeline::is_skipping`]).
    pub fn push(&mut self, expect: Expect) {
        debug_assert!(!self.skipping);
        self.open_batch = true;
        if owes_nothing(&expect) {
            self.unanswered += 1;
        }
        if self.client_in_copy {
            // Anything but CopyData, CopyDone, CopyFail, Sync and Flush aborts the copy.
            self.client_in_copy = false;
            self.copy_data_sent = false;
        }
        self.queue.push_back(expect);
    }

    /// The fast path of [`Pipeline::on_server_tag`]: a message that only continues the
    /// answer to a simple query (rows, their description, a command's completion, a
    /// notice) or an Execute (rows) changes nothing.
    #[inline(always)]
    pub fn is_plain_answer(&self, tag: u8) -> bool {
        use crate::protocol::tag as t;
        match self.queue.front() {
            Some(Expect::Query) => matches!(
                tag,
                t::ROW_DESCRIPTION
                    | t::DATA_ROW
                    | t::COMMAND_COMPLETE
                    | b'N'
                    | t::EMPTY_QUERY_RESPONSE
            ),
            Some(Expect::Execute) => tag == t::DATA_ROW,
            _ => false,
        }
    }

    /// Some entry in flight owes nothing from the server (see
    /// [`Pipeline::pop_answered`]); usually none does.
    #[inline]
    pub fn has_unanswered(&self) -> bool {
        self.unanswered > 0
    }

    /// Pops what is at the front and owes nothing from the server: markers, and the
    /// answers pgring gives itself (returned, to be written to the client now).
    pub fn pop_answered(&mut self) -> Option<Expect> {
        if self.unanswered == 0 {
            return None;
        }
        while let Some(front) = self.queue.front() {
            if front.is_marker() {
                self.queue.pop_front();
                self.unanswered -= 1;
                continue;
            }
            if matches!(
                front,
                Expect::Parse {
                    reply: Reply::Answer,
                    ..
                } | Expect::Close {
                    reply: Reply::Answer,
                    ..
                }
            ) {
                self.unanswered -= 1;
                return self.queue.pop_front();
            }
            return None;
        }
        None
    }

    /// Takes in one server message by its tag (the caller has popped the answered front
    /// first, see [`Pipeline::pop_answered`]). An ErrorResponse in the extended protocol
    /// is [`Seen::Completed`] with the failed message; the caller then calls
    /// [`Pipeline::skip_to_sync`].
    pub fn on_server_tag(&mut self, tag: u8, status: Option<TxStatus>) -> Result<Seen, Desync> {
        use crate::protocol::tag as t;
        const NOTICE: u8 = b'N';
        const NOTIFICATION: u8 = b'A';
        const PARAMETER_DESCRIPTION: u8 = b't';
        const FUNCTION_CALL_RESPONSE: u8 = b'V';
        const COPY_IN_RESPONSE: u8 = b'G';
        const COPY_OUT_RESPONSE: u8 = b'H';
        const COPY_BOTH_RESPONSE: u8 = b'W';
        const CLOSE_COMPLETE: u8 = b'3';
        // Asynchronous messages belong to no request.
        if matches!(tag, NOTICE | NOTIFICATION | t::PARAMETER_STATUS) {
            return Ok(Seen::Forward);
        }
        let Some(front) = self.queue.front() else {
            // Only a FATAL may come unasked (the server is going away).
            if tag == t::ERROR_RESPONSE {
                return Ok(Seen::Forward);
            }
            return Err(Desync {
                tag,
                expected: "nothing (no request was in flight)",
            });
        };
        let desync = |expected| Err(Desync { tag, expected });
        match front {
            Expect::Query | Expect::FunctionCall | Expect::Sync => {
                if tag == t::READY_FOR_QUERY {
                    let status = status.unwrap_or(TxStatus::Idle);
                    self.queue.pop_front();
                    self.status = Status(status);
                    self.client_in_copy = false;
                    self.copy_data_sent = false;
                    return Ok(Seen::Ready(status));
                }
                match (front, tag) {
                    (Expect::Sync, t::ERROR_RESPONSE) => Ok(Seen::Forward),
                    (Expect::Sync, _) => desync("ReadyForQuery"),
                    (Expect::FunctionCall, FUNCTION_CALL_RESPONSE | t::ERROR_RESPONSE) => {
                        Ok(Seen::Forward)
                    }
                    (Expect::FunctionCall, _) => desync("FunctionCallResponse"),
                    (_, COPY_IN_RESPONSE | COPY_BOTH_RESPONSE) => {
                        self.enter_copy_in();
                        Ok(Seen::Forward)
                    }
                    (_, t::ERROR_RESPONSE) => {
                        // A simple query's COPY fails: the server leaves copy-in mode.
                        self.client_in_copy = false;
                        self.copy_data_sent = false;
                        Ok(Seen::Forward)
                    }
                    _ => Ok(Seen::Forward),
                }
            }
            Expect::Parse { .. } => match tag {
                t::PARSE_COMPLETE => Ok(Seen::Completed(self.pop())),
                t::ERROR_RESPONSE => Ok(Seen::Completed(self.pop())),
                _ => desync("ParseComplete"),
            },
            Expect::Bind { .. } => match tag {
                t::BIND_COMPLETE | t::ERROR_RESPONSE => Ok(Seen::Completed(self.pop())),
                _ => desync("BindComplete"),
            },
            Expect::Close { .. } => match tag {
                CLOSE_COMPLETE | t::ERROR_RESPONSE => Ok(Seen::Completed(self.pop())),
                _ => desync("CloseComplete"),
            },
            Expect::DescribeStatement => match tag {
                PARAMETER_DESCRIPTION if !self.described => {
                    self.described = true;
                    Ok(Seen::Forward)
                }
                t::ROW_DESCRIPTION | t::NO_DATA if self.described => {
                    self.described = false;
                    Ok(Seen::Completed(self.pop()))
                }
                t::ERROR_RESPONSE => {
                    self.described = false;
                    Ok(Seen::Completed(self.pop()))
                }
                _ => desync("ParameterDescription, then RowDescription or NoData"),
            },
            Expect::DescribePortal => match tag {
                t::ROW_DESCRIPTION | t::NO_DATA | t::ERROR_RESPONSE => {
                    Ok(Seen::Completed(self.pop()))
                }
                _ => desync("RowDescription or NoData"),
            },
            Expect::Execute => match tag {
                t::COMMAND_COMPLETE
                | t::EMPTY_QUERY_RESPONSE
                | t::PORTAL_SUSPENDED
                | t::ERROR_RESPONSE => {
                    self.client_in_copy = false;
                    self.copy_data_sent = false;
                    Ok(Seen::Completed(self.pop()))
                }
                COPY_IN_RESPONSE | COPY_BOTH_RESPONSE => {
                    self.enter_copy_in();
                    Ok(Seen::Forward)
                }
                t::DATA_ROW | COPY_OUT_RESPONSE | t::COPY_DATA | t::COPY_DONE => Ok(Seen::Forward),
                _ => desync("the rows of an Execute"),
            },
            Expect::CopyEnd | Expect::CopyData => {
                unreachable!("markers are popped by pop_answered before a server message")
            }
        }
    }

    fn pop(&mut self) -> Expect {
        self.queue
            .pop_front()
            .expect("the front was just looked at")
    }

    /// The front Execute or Query started a COPY FROM STDIN (or COPY BOTH): the Syncs
    /// the client sent behind it before any data are read in copy-in mode and ignored.
    fn enter_copy_in(&mut self) {
        if matches!(self.queue.front(), Some(Expect::Execute)) {
            // The Syncs behind it are ignored: the batch stays open on the server.
            self.open_batch = true;
        }
        let mut i = 1;
        let mut data_before = false;
        while i < self.queue.len() {
            match self.queue[i] {
                Expect::Sync => {
                    if data_before {
                        self.uncertain = true;
                        return;
                    }
                    self.queue.remove(i);
                }
                Expect::CopyData => {
                    data_before = true;
                    i += 1;
                }
                // The client already ended (or aborted) the copy.
                _ => return,
            }
        }
        self.client_in_copy = true;
        self.copy_data_sent = data_before;
    }

    /// After an ErrorResponse to an extended-protocol message, the server reads and
    /// ignores every message up to the next Sync, of whatever kind: their entries are
    /// popped and handed to `skipped`.
    pub fn skip_to_sync(&mut self, mut skipped: impl FnMut(Expect)) {
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync) {
                return;
            }
            let e = self.pop();
            if owes_nothing(&e) {
                self.unanswered -= 1;
            }
            skipped(e);
        }
        // The Sync has not been sent yet: what comes before it is skipped too.
        self.skipping = true;
    }

    /// Whether the message just completed by an ErrorResponse belonged to the extended
    /// protocol (so that the server now skips to Sync).
    pub fn error_skips(completed: &Expect) -> bool {
        completed.is_extended()
    }
}
