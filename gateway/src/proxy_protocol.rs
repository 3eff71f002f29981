//! HAProxy's PROXY protocol (v1 text and v2 binary) on the proxy listeners
//! (`--proxy-protocol NETS`).
//!
//! A layer-4 balancer (AWS NLB, HAProxy in TCP mode, an ingress passing TLS through) opens
//! the connection itself, so the gateway's peer is the balancer; the PROXY header it writes
//! first names the client. For a connection whose peer is in the trusted networks, the
//! header is required and read before anything else (before the TLS handshake on the TLS
//! listener): its source address becomes the connection's peer for everything after it
//! (the client address of policies, `X-Forwarded-For`, logs and analytics). A connection
//! from such a peer without a valid header in time is closed, as nginx and HAProxy do. A
//! `LOCAL` (v2) or `UNKNOWN` (v1) header, what balancers send for their own health checks,
//! keeps the real peer. Peers outside the networks are ordinary clients: nothing is read
//! from them before HTTP, so no client can claim another's address.
//!
//! The header is read whole (v1 at most 107 bytes, v2 its 16 bytes and the length they
//! declare), and the bytes that came after it in the same reads are put back in front of
//! the stream for the TLS handshake or the HTTP parser.

use crate::connections::ConnectionLimit;
use async_trait::async_trait;
use bytes::BytesMut;
use ipnet::IpNet;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType};
use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// The longest header: v2's 16 bytes and the largest length they can declare.
const MAX_HEADER: usize = 16 + u16::MAX as usize;

/// Which peers speak the PROXY protocol, and how long their header may take.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    from: Vec<IpNet>,
    limit: Duration,
    /// Where refusals are counted (`tollgate_proxy_protocol_refused_total`).
    connections: Arc<ConnectionLimit>,
}

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    /// The client's address and port.
    Client(SocketAddr),
    /// Nothing to take (`LOCAL`, `UNKNOWN`, an address family other than IP): the peer
    /// stays the client.
    Nothing,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The bytes are no PROXY header.
    Malformed(String),
    /// The stream ended, or failed, before the header was whole.
    Closed(String),
    /// The stream ended before its first byte: a TCP health check (an NLB's opens and
    /// closes), not a misconfigured balancer.
    Empty,
    /// The header did not arrive within the limit.
    TimedOut,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "no valid PROXY protocol header: {why}"),
            Refusal::Closed(why) => write!(f, "connection ended before its PROXY header: {why}"),
            Refusal::Empty => f.write_str("connection closed before sending anything"),
            Refusal::TimedOut => f.write_str("PROXY protocol header not received in time"),
        }
    }
}

/// Parse the header at the start of `buf`: `Ok(None)` while it may still be incomplete,
/// else what it says and its length.
fn parse(buf: &[u8]) -> Result<Option<(Said, usize)>, Refusal> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(Refusal::Malformed("longer than a header can be".into()))
        } else {
            Ok(None)
        };
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let said = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Said::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Said::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => Said::Nothing,
            };
            Ok(Some((said, h.header.len())))
        }
        HeaderResult::V2(Ok(h)) => {
            let said = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Said::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Said::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                // LOCAL (a balancer's own connection), or an address family the gateway
                // cannot use: the spec says to keep the connection's own addresses.
                _ => Said::Nothing,
            };
            Ok(Some((said, h.len())))
        }
        HeaderResult::V1(Err(e)) => Err(Refusal::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(Refusal::Malformed(e.to_string())),
    }
}

/// Read one header off `stream` by `deadline`: what it says, and the bytes read after it.
async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
) -> Result<(Said, BytesMut), Refusal> {
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            if let Some((said, len)) = parse(&buf)? {
                let rest = buf.split_off(len);
                return Ok((said, rest));
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Err(Refusal::Empty),
                Ok(0) => return Err(Refusal::Closed("end of stream".into())),
                Ok(_) => {}
                Err(e) => return Err(Refusal::Closed(e.to_string())),
            }
        }
    };
    tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(Err(Refusal::TimedOut))
}

impl ProxyProtocol {
    /// Peers in `from` send a header, within `limit` of the connection's start; refusals
    /// are counted in `connections`.
    pub fn new(
        from: Vec<IpNet>,
        limit: Duration,
        connections: Arc<ConnectionLimit>,
    ) -> ProxyProtocol {
        ProxyProtocol {
            from,
            limit,
            connections,
        }
    }

    /// Whether a connection from `peer` starts with a header.
    fn speaks(&self, peer: Option<&PeerAddr>) -> bool {
        let Some(ip) = peer
            .and_then(|p| p.as_inet())
            .map(|a| a.ip().to_canonical())
        else {
            return false;
        };
        self.from.iter().any(|n| n.contains(&ip))
    }

    /// On a freshly accepted connection (opened at `opened`): when its peer is a trusted
    /// balancer, read its header, make the client it names the stream's peer, and put the
    /// bytes after the header back. An error means the connection must be closed.
    pub async fn accept(&self, stream: &mut L4Stream, opened: Instant) -> Result<(), String> {
        let digest = stream.get_socket_digest();
        let peer = digest.as_ref().and_then(|d| d.peer_addr());
        if !self.speaks(peer) {
            return Ok(());
        }
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        let (said, rest) = read_header(stream, opened + self.limit)
            .await
            .map_err(|e| {
                let quiet = e == Refusal::Empty;
                let e = format!("{e} (from {peer}); connection closed");
                if quiet {
                    tracing::debug!("{e}");
                } else {
                    // Only trusted peers get here: a balancer that sends no header is a
                    // misconfiguration an operator must see (nginx logs it as an error).
                    tracing::warn!("{e}");
                    self.connections.refuse_proxy_protocol();
                }
                e
            })?;
        stream.rewind(&rest);
        if let Said::Client(client) = said {
            let new = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = new.peer_addr.set(Some(PeerAddr::Inet(client)));
            let local = digest.as_ref().and_then(|d| d.local_addr().cloned());
            let _ = new.local_addr.set(local);
            stream.set_socket_digest(new);
        }
        Ok(())
    }
}

/// On the TLS listener the header comes before the handshake.
#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        self.accept(stream, Instant::now())
            .await
            .map_err(|e| Error::explain(ErrorType::HandshakeError, e))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, read_header, Refusal, Said};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v1_and_v2_headers_name_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n";
        let then = [&v1[..], b"GET / HTTP/1.1\r\n"].concat();
        assert_eq!(
            parse(&then),
            Ok(Some((
                Said::Client("203.0.113.7:4711".parse().unwrap()),
                v1.len()
            )))
        );
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n";
        assert_eq!(
            parse(v1),
            Ok(Some((
                Said::Client("[2001:db8::7]:4711".parse().unwrap()),
                v1.len()
            )))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nGET"),
            Ok(Some((Said::Nothing, 15)))
        );
        // v2 PROXY over IPv4, with a TLV after the addresses.
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1, 0x12, 0x67, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0, 1, 9]);
        let mut h = v2(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h),
            Ok(Some((
                Said::Client("203.0.113.7:4711".parse().unwrap()),
                len
            )))
        );
        // v2 LOCAL: the balancer's own connection.
        assert_eq!(parse(&v2(0, 0, &[])), Ok(Some((Said::Nothing, 16))));
    }

    #[test]
    fn partial_headers_wait_and_other_bytes_are_refused() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"PROX"), Ok(None));
        assert_eq!(parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 44"), Ok(None));
        let whole = v2(
            1,
            0x11,
            &[203, 0, 113, 7, 10, 0, 0, 1, 0x12, 0x67, 0x01, 0xbb],
        );
        for cut in 1..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 443\r\n",
            b"PROXY TCP4 not-an-address 10.0.0.1 1 443\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Refusal::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn a_header_split_over_reads_is_read_whole_and_the_rest_kept() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in [
                &b"PROXY TCP4 203.0."[..],
                b"113.7 10.0.0.1 4711 443\r",
                b"\nGET",
            ] {
                client.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (said, rest) = read_header(&mut server, deadline).await.unwrap();
        assert_eq!(said, Said::Client("203.0.113.7:4711".parse().unwrap()));
        // The header ended inside the third read's bytes or before them.
        assert!(b"GET".starts_with(&rest), "{rest:?}");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_header_that_never_ends_times_out_and_a_closed_stream_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        assert_eq!(
            read_header(&mut server, deadline).await.unwrap_err(),
            Refusal::TimedOut
        );
        drop(client);
        // (What the first call read went with it.) Closed before a byte: a health check.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(
            read_header(&mut server, deadline).await.unwrap_err(),
            Refusal::Empty
        );
        // Closed in the middle of a header.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        drop(client);
        assert!(matches!(
            read_header(&mut server, deadline).await,
            Err(Refusal::Closed(_))
        ));
    }
}
