//! A TCP relay that records every byte it forwards: put it on a link (client → pgring,
//! pgring → PostgreSQL) to see what crosses that link on the wire.
//!
//! Include it next to `mod support;` as `#[path = "support/relay.rs"] mod relay;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Listens on a free 127.0.0.1 port and forwards each connection to `target`, keeping a
/// copy of the bytes of both directions.
pub struct Relay {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                pump(&inbound, &outbound, recorder.clone());
                pump(&outbound, &inbound, recorder.clone());
            }
        });
        Relay { port, seen }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything forwarded so far, both directions interleaved.
    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }

    /// True when `needle` crossed the link in the clear.
    pub fn saw(&self, needle: &[u8]) -> bool {
        self.seen().windows(needle.len()).any(|w| w == needle)
    }
}

/// Copies `from` to `to` on a thread, recording what passes.
fn pump(from: &TcpStream, to: &TcpStream, seen: Arc<Mutex<Vec<u8>>>) {
    let mut from = from.try_clone().unwrap();
    let mut to = to.try_clone().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
