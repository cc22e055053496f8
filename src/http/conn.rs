//! What every request of one connection shares: who is at the other end, over which scheme,
//! both addresses already spelled out, and whether its framing has gone wrong.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Where a connection is: what the environ says about both ends.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    /// Both ends as the environ spells them, formatted once per connection rather than
    /// once per request (formatting an address costs more than the rest of the environ).
    pub text: Arc<ConnText>,
    /// Set once the connection's bytes broke the grammar (see `framing`).
    pub fault: FramingFault,
}

#[derive(Debug)]
pub struct ConnText {
    pub peer_ip: String,
    pub peer_port: String,
    pub local_ip: String,
    pub local_port: String,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, scheme: &'static str) -> ConnInfo {
        let text = ConnText {
            peer_ip: peer.ip().to_canonical().to_string(),
            peer_port: peer.port().to_string(),
            local_ip: local.ip().to_string(),
            local_port: local.port().to_string(),
        };
        ConnInfo {
            peer,
            scheme,
            text: Arc::new(text),
            fault: FramingFault::default(),
        }
    }
}

/// Why nothing more on a connection may be read as a request or a body, once its bytes broke
/// the grammar: set by the server's reading of the bytes, read by every body on the
/// connection without a lock.
#[derive(Clone, Debug, Default)]
pub struct FramingFault(Arc<OnceLock<&'static str>>);

impl FramingFault {
    pub fn set(&self, reason: &'static str) {
        let _ = self.0.set(reason);
    }

    pub fn get(&self) -> Option<&'static str> {
        self.0.get().copied()
    }
}
