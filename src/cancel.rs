//! Cancel keys: handing them out, and routing a CancelRequest to the right backend from
//! whichever shard it arrives on.
//!
//! The process id of the BackendKeyData pgring gives a client encodes the shard that owns
//! the client (`(shard + 1) << SLOT_BITS | slot`); the secret is random. A CancelRequest
//! may arrive on any shard (SO_REUSEPORT spreads connections without regard to keys), so
//! the receiving shard decodes the owner and, if it is another shard, passes the key on
//! over the shard mesh. The owner checks the secret and sends a CancelRequest with the
//! real backend key to the server the client is using at that moment. Unknown keys are
//! dropped silently, as PostgreSQL does.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::oneshot;
use subtle::ConstantTimeEq;

use crate::config::ServerAddress;
use crate::protocol::startup::CancelKey;
use crate::shard::{Shard, ShardMsg};

/// Bits of the process id that number clients within a shard.
pub const SLOT_BITS: u32 = 22;
const SLOT_MASK: i32 = (1 << SLOT_BITS) - 1;
/// The most shards the key layout can name.
pub const MAX_SHARDS: usize = (1 << (31 - SLOT_BITS)) - 1;

/// The shard that owns a cancel key, if the key is one of ours.
pub fn owner_of(key: CancelKey) -> Option<usize> {
    let shard = (key.process_id >> SLOT_BITS) as usize;
    shard.checked_sub(1)
}

/// A client's entry in its shard's registry. The session holds it too, so that recording
/// the server it uses (twice per transaction in transaction pooling) touches no map.
pub struct CancelSlot {
    key: CancelKey,
    /// The backend the client is using now, if any.
    server: RefCell<Option<(CancelKey, Rc<ServerAddress>)>>,
    /// Fired when the shard shuts down, to close idle clients.
    shutdown: RefCell<Option<oneshot::Sender<()>>>,
}

impl CancelSlot {
    /// The key given to the client in BackendKeyData.
    pub fn key(&self) -> CancelKey {
        self.key
    }

    /// Records the backend the client is using now (`None` when it has none).
    pub fn set_server(&self, server: Option<(CancelKey, Rc<ServerAddress>)>) {
        *self.server.borrow_mut() = server;
    }

    pub fn set_shutdown(&self, tx: oneshot::Sender<()>) {
        *self.shutdown.borrow_mut() = Some(tx);
    }
}

/// The cancel keys of one shard's clients.
pub struct CancelRegistry {
    shard: usize,
    next_slot: Cell<i32>,
    entries: RefCell<HashMap<i32, Rc<CancelSlot>>>,
}

impl CancelRegistry {
    pub fn new(shard: usize) -> Self {
        CancelRegistry {
            shard,
            next_slot: Cell::new(0),
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// A fresh key for a new client.
    pub fn register(&self) -> Rc<CancelSlot> {
        let mut entries = self.entries.borrow_mut();
        let base = ((self.shard as i32) + 1) << SLOT_BITS;
        loop {
            let slot = self.next_slot.get();
            self.next_slot.set((slot + 1) & SLOT_MASK);
            let process_id = base | slot;
            if entries.contains_key(&process_id) {
                continue;
            }
            let entry = Rc::new(CancelSlot {
                key: CancelKey {
                    process_id,
                    secret_key: rand::random::<i32>(),
                },
                server: RefCell::new(None),
                shutdown: RefCell::new(None),
            });
            entries.insert(process_id, entry.clone());
            return entry;
        }
    }

    pub fn unregister(&self, key: CancelKey) {
        self.entries.borrow_mut().remove(&key.process_id);
    }

    /// Tells every session on this shard that the shard is shutting down.
    pub fn signal_shutdown(&self) {
        for e in self.entries.borrow().values() {
            if let Some(tx) = e.shutdown.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend to cancel for a client key, if the key is known and the secret right.
    fn lookup(&self, key: CancelKey) -> Option<(CancelKey, Rc<ServerAddress>)> {
        let entry = self.entries.borrow().get(&key.process_id)?.clone();
        let secret_ok: bool = entry
            .key
            .secret_key
            .to_be_bytes()
            .ct_eq(&key.secret_key.to_be_bytes())
            .into();
        if !secret_ok {
            return None;
        }
        let server = entry.server.borrow().clone();
        server
    }
}

/// Handles a CancelRequest that arrived on `shard`.
pub async fn route(shard: &Rc<Shard>, key: CancelKey) {
    match owner_of(key) {
        Some(owner) if owner == shard.id => cancel_local(shard, key).await,
        Some(owner) if owner < shard.count => shard.send_to(owner, ShardMsg::Cancel(key)).await,
        _ => log::debug!("cancel request with an unknown key dropped"),
    }
}

/// Cancels on the owning shard.
pub async fn cancel_local(shard: &Rc<Shard>, key: CancelKey) {
    let Some((backend_key, address)) = shard.cancel.lookup(key) else {
        log::debug!("cancel request for an unknown or idle client dropped");
        return;
    };
    let opts = shard.connect_options();
    if let Err(e) = crate::server::send_cancel(&address, backend_key, opts).await {
        log::warn!(
            "could not send cancel request to {}: {e}",
            crate::server::describe(&address)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_shard() {
        for shard in [0, 1, 7, MAX_SHARDS - 1] {
            let reg = CancelRegistry::new(shard);
            let key = reg.register().key();
            assert_eq!(owner_of(key), Some(shard));
            assert!(key.process_id > 0);
        }
    }

    #[test]
    fn wrong_secret_finds_nothing() {
        let reg = CancelRegistry::new(0);
        let slot = reg.register();
        let key = slot.key();
        let addr = Rc::new(ServerAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 5432,
        });
        let backend = CancelKey {
            process_id: 42,
            secret_key: 7,
        };
        slot.set_server(Some((backend, addr)));
        assert_eq!(reg.lookup(key).map(|(k, _)| k), Some(backend));
        let forged = CancelKey {
            secret_key: key.secret_key.wrapping_add(1),
            ..key
        };
        assert!(reg.lookup(forged).is_none());
    }

    #[test]
    fn slots_are_not_reused_while_taken() {
        let reg = CancelRegistry::new(3);
        let a = reg.register().key();
        let b = reg.register().key();
        assert_ne!(a.process_id, b.process_id);
    }
}
