//! What every request of one connection shares: who is at the other end, over which scheme,
//! and both addresses already spelled out.

use std::net::SocketAddr;
use std::sync::Arc;

/// Where a connection is: what the environ says about both ends.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    /// Both ends as the environ spells them, formatted once per connection rather than
    /// once per request (formatting an address costs more than the rest of the environ).
    pub text: Arc<ConnText>,
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
        }
    }
}
