//! A cap on the proxy's open client connections.
//!
//! Every client connection holds a descriptor (and, while a request is proxied, an upstream
//! one); past the process's descriptor limit `accept` fails and the admin listener, the
//! store and upstream connections fail with it. The proxy therefore closes a connection
//! accepted while [`ConnectionLimit::max`] are open, at once and without an answer, and
//! counts it.
//!
//! The cap is looked at twice: as Pingora accepts a connection (the listeners' connection
//! filter, before a TLS handshake or any task: a flood past the cap costs no handshake),
//! and when the connection is handed to the proxy, which takes its slot
//! ([`ConnectionLimit::try_open`]). Connections still in their TLS handshake hold no slot
//! yet, so the first look can let a few more through at once; the second is exact.

use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Open client connections of the proxy listeners, and their cap.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    open: AtomicUsize,
    refused: AtomicU64,
    proxy_protocol_refused: AtomicU64,
}

impl Default for ConnectionLimit {
    fn default() -> Self {
        ConnectionLimit {
            max: AtomicUsize::new(usize::MAX),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            proxy_protocol_refused: AtomicU64::new(0),
        }
    }
}

impl ConnectionLimit {
    /// Set the cap (at least one).
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections from balancers closed because their PROXY protocol header was missing,
    /// malformed or late (`--proxy-protocol`), since the start.
    pub fn proxy_protocol_refused(&self) -> u64 {
        self.proxy_protocol_refused.load(Ordering::Relaxed)
    }

    /// Count one connection [`ConnectionLimit::proxy_protocol_refused`] counts.
    pub fn refuse_proxy_protocol(&self) {
        self.proxy_protocol_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for a new connection, held for as long as it lives; `None` (counted as
    /// refused) when the cap is reached.
    pub fn try_open(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.max();
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_ok() {
            return Some(ConnectionSlot(self.clone()));
        }
        self.refuse(max);
        None
    }

    /// Count (and now and then log) a connection closed because `max` are open.
    fn refuse(&self, max: usize) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged on the 1st, 2nd, 4th, 8th... refusal: a flood does not flood the log.
        if refused.is_power_of_two() {
            tracing::warn!(
                max,
                refused,
                "connection cap reached: new client connections are closed at once (--max-connections)"
            );
        }
    }
}

/// Checked by the proxy listeners as each connection is accepted: one accepted while the
/// cap is reached is closed there (and counted), before its TLS handshake.
#[async_trait]
impl ConnectionFilter for ConnectionLimit {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        let max = self.max();
        if self.open() < max {
            return true;
        }
        self.refuse(max);
        false
    }
}

/// One open connection; frees its slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The default cap for a process allowed `nofile` descriptors: half of what is left after
/// a reserve for the listeners, the store, Redis and the admin service's connections, as
/// a proxied request holds a client and an upstream connection.
pub fn default_max(nofile: u64) -> usize {
    let usable = nofile.saturating_sub(256) / 2;
    usize::try_from(usable).unwrap_or(usize::MAX).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_freed() {
        let limit = Arc::new(ConnectionLimit::default());
        limit.set_max(2);
        let a = limit.try_open().expect("first");
        let b = limit.try_open().expect("second");
        assert!(limit.try_open().is_none());
        assert_eq!((limit.open(), limit.refused()), (2, 1));
        drop(a);
        let _c = limit.try_open().expect("a freed slot is reused");
        drop(b);
        assert_eq!((limit.open(), limit.refused()), (1, 1));
    }

    #[tokio::test]
    async fn the_accept_filter_refuses_at_the_cap() {
        let limit = Arc::new(ConnectionLimit::default());
        limit.set_max(1);
        assert!(limit.should_accept(None).await);
        let slot = limit.try_open().expect("first");
        assert!(!limit.should_accept(None).await);
        assert_eq!((limit.open(), limit.refused()), (1, 1));
        drop(slot);
        assert!(limit.should_accept(None).await);
        assert_eq!(limit.refused(), 1);
    }

    #[test]
    fn the_default_leaves_a_reserve() {
        assert_eq!(default_max(1024), 384);
        assert_eq!(default_max(1_048_576), 524_160);
        assert_eq!(default_max(100), 16);
    }
}
