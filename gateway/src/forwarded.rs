//! The client behind a trusted proxy (`settings.trusted_proxies`).
//!
//! By default the gateway is the edge: the client is the connection's peer, and whatever a
//! client writes in `X-Forwarded-*` is overwritten. Behind a load balancer every peer is
//! the balancer, so the operator lists the balancers' addresses; for a connection from one
//! of them the client is read from `X-Forwarded-For`, right to left, skipping the addresses
//! that are themselves trusted proxies (nginx's `real_ip_recursive`): the first other one
//! is the client. What lies left of it was written by the client itself and is dropped.
//! An entry that is not an address stops the walk (the client is then the last trusted
//! hop read). Entries may carry a port (`192.0.2.7:4711`, `[2001:db8::7]:443`), as some
//! balancers write them. A trusted proxy's `X-Request-Id` (one, 1 to 128 visible ASCII
//! characters) is kept as the request's id, so that its logs and the gateway's meet.

use http::header::HeaderMap;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a trusted proxy in front says about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The client.
    pub(crate) client: IpAddr,
    /// `X-Forwarded-For` for the upstream: the client, the trusted hops after it, the peer.
    pub(crate) chain: HeaderValue,
    /// Whether the client spoke HTTPS to the proxy in front (its `X-Forwarded-Proto`), when
    /// it said so.
    pub(crate) https: Option<bool>,
    /// The host the client asked the proxy in front for (its `X-Forwarded-Host`), when it
    /// sent exactly one.
    pub(crate) host: Option<HeaderValue>,
    /// The id the proxy in front gave the request (its `X-Request-Id`), when it sent
    /// exactly one of 1 to 128 visible ASCII characters.
    pub(crate) request_id: Option<HeaderValue>,
}

/// Whether `ip` is one of the trusted proxies.
pub(crate) fn is_trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (IPv6 then in brackets).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The request came from `peer`, a trusted proxy: who the client is, and what to forward.
/// `canonical` maps an address to the form the gateway uses (IPv4-mapped IPv6 as IPv4).
pub(crate) fn from_trusted_peer(
    nets: &[IpNet],
    peer: IpAddr,
    headers: &HeaderMap,
    canonical: fn(IpAddr) -> IpAddr,
) -> Forwarded {
    // Every entry of every `X-Forwarded-For` line, in order; `None` for one that is not an
    // address (a line that is not text counts as one such entry).
    let mut entries: Vec<Option<IpAddr>> = Vec::new();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        match line.to_str() {
            Ok(text) => entries.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(|e| parse_entry(e).map(canonical)),
            ),
            Err(_) => entries.push(None),
        }
    }
    let mut client = peer;
    let mut from = entries.len();
    for (i, entry) in entries.iter().enumerate().rev() {
        let Some(ip) = *entry else { break };
        client = ip;
        from = i;
        if !is_trusted(nets, ip) {
            break;
        }
    }
    let mut chain = String::new();
    for ip in entries[from..]
        .iter()
        .flatten()
        .chain(std::iter::once(&peer))
    {
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        let _ = write!(chain, "{ip}");
    }
    let chain =
        HeaderValue::from_str(&chain).unwrap_or_else(|_| unreachable!("addresses are text"));
    let https = headers
        .get_all(&X_FORWARDED_PROTO)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii)
        .and_then(|p| {
            if p.eq_ignore_ascii_case(b"https") {
                Some(true)
            } else if p.eq_ignore_ascii_case(b"http") {
                Some(false)
            } else {
                None
            }
        });
    let mut hosts = headers.get_all(&X_FORWARDED_HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) if !h.is_empty() && !h.as_bytes().contains(&b',') => Some(h.clone()),
        _ => None,
    };
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    let request_id = match (ids.next(), ids.next()) {
        (Some(id), None)
            if (1..=128).contains(&id.len())
                && id.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            Some(id.clone())
        }
        _ => None,
    };
    Forwarded {
        client,
        chain,
        https,
        host,
        request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()))
            })
            .collect()
    }

    fn from(trusted: &[&str], peer: &str, headers: &[(&str, &str)]) -> Forwarded {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        from_trusted_peer(&nets(trusted), peer.parse().unwrap(), &map, |ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_entry() {
        let f = from(
            &["10.0.0.0/8"],
            "10.0.0.1",
            &[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2")],
        );
        assert_eq!(f.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        // What the client wrote itself (1.1.1.1) is dropped.
        assert_eq!(f.chain, "203.0.113.7, 10.0.0.2, 10.0.0.1");
        // Several lines are one list, in order.
        let f = from(
            &["10.0.0.0/8"],
            "10.0.0.1",
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
        );
        assert_eq!(f.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(f.chain, "203.0.113.7, 10.0.0.1");
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let f = from(
            &["10.0.0.1"],
            "10.0.0.1",
            &[("x-forwarded-for", "[2001:db8::7]:443")],
        );
        assert_eq!(f.client, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(f.chain, "2001:db8::7, 10.0.0.1");
        for entry in ["192.0.2.7:4711", "::ffff:192.0.2.7", "[::ffff:192.0.2.7]"] {
            let f = from(&["10.0.0.1"], "10.0.0.1", &[("x-forwarded-for", entry)]);
            assert_eq!(f.client, "192.0.2.7".parse::<IpAddr>().unwrap(), "{entry}");
        }
    }

    #[test]
    fn garbage_stops_the_walk() {
        // Nothing usable: the client is the peer.
        for xff in ["unknown", "", " , ", "203.0.113.7, nonsense"] {
            let f = from(&["10.0.0.1"], "10.0.0.1", &[("x-forwarded-for", xff)]);
            assert_eq!(f.client, "10.0.0.1".parse::<IpAddr>().unwrap(), "{xff:?}");
            assert_eq!(f.chain, "10.0.0.1", "{xff:?}");
        }
        let f = from(&["10.0.0.1"], "10.0.0.1", &[]);
        assert_eq!(
            (f.client.to_string(), f.https, f.host),
            ("10.0.0.1".into(), None, None)
        );
        // Garbage left of the client does not matter.
        let f = from(
            &["10.0.0.1"],
            "10.0.0.1",
            &[("x-forwarded-for", "nonsense, 203.0.113.7")],
        );
        assert_eq!(f.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(f.chain, "203.0.113.7, 10.0.0.1");
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let f = from(
            &["10.0.0.0/8"],
            "10.0.0.1",
            &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")],
        );
        assert_eq!(f.client, "10.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(f.chain, "10.1.1.1, 10.2.2.2, 10.0.0.1");
    }

    #[test]
    fn proto_and_host() {
        let f = from(
            &["10.0.0.1"],
            "10.0.0.1",
            &[
                ("x-forwarded-proto", "HTTPS"),
                ("x-forwarded-host", "api.example.com"),
            ],
        );
        assert_eq!(f.https, Some(true));
        assert_eq!(f.host.unwrap(), "api.example.com");
        assert_eq!(f.request_id, None);
        // The last hop's word counts; anything else is not believed.
        let f = from(
            &["10.0.0.1"],
            "10.0.0.1",
            &[("x-forwarded-proto", "https, http")],
        );
        assert_eq!(f.https, Some(false));
        for (proto, host) in [("ftp", "a.example, b.example"), ("", "")] {
            let f = from(
                &["10.0.0.1"],
                "10.0.0.1",
                &[("x-forwarded-proto", proto), ("x-forwarded-host", host)],
            );
            assert_eq!((f.https, f.host), (None, None), "{proto:?} {host:?}");
        }
    }

    #[test]
    fn the_request_id_of_the_proxy_in_front() {
        let f = from(&["10.0.0.1"], "10.0.0.1", &[("x-request-id", "lb-7f3a:42")]);
        assert_eq!(f.request_id.unwrap(), "lb-7f3a:42");
        let long = "x".repeat(129);
        for bad in [
            &[("x-request-id", "has space")][..],
            &[("x-request-id", long.as_str())],
            &[("x-request-id", "a"), ("x-request-id", "b")],
        ] {
            assert_eq!(
                from(&["10.0.0.1"], "10.0.0.1", bad).request_id,
                None,
                "{bad:?}"
            );
        }
    }
}
