//! `ip-filter`: allow or forbid callers by address.

use crate::{Answer, Flow, Policy, RequestCtx};
use http::StatusCode;
use ipnet::{IpNet, Ipv4Net};
use pingora_http::RequestHeader;
use std::net::{IpAddr, Ipv6Addr};
use tollgate_config::IpFilterDef;

/// `ip-filter` (inbound only; in other sections it does nothing).
///
/// `action: allow` lets through only callers whose address ([`RequestCtx::client_ip`]) is in
/// one of the networks; `forbid` turns those away and lets the others through. A refusal is
/// a 403 problem answer. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as the IPv4
/// address, both for the caller and for listed networks (`::ffff:10.0.0.0/104` is
/// `10.0.0.0/8`). A request with no known client address is refused by an `allow` list and
/// let through by a `forbid` list.
#[derive(Debug)]
pub(crate) struct IpFilter {
    allow: bool,
    networks: Vec<IpNet>,
    refusal: Answer,
}

/// The IPv4 address behind an IPv4-mapped IPv6 address, or the address itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The networks to compare canonical addresses with: an IPv4-mapped IPv6 network becomes
/// the IPv4 network behind it; an IPv6 network wider than `/96` that holds the whole mapped
/// range (`::/0`, `::ffff:0:0/95`) also stands for every IPv4 address.
fn canonical_nets(net: IpNet) -> impl Iterator<Item = IpNet> {
    let mapped_range = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
    let (first, second) = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                let n = Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4);
                (n.trunc(), None)
            }
            None => (net.trunc(), None),
        },
        IpNet::V6(v6) if v6.contains(&mapped_range) => {
            (net.trunc(), Some(IpNet::V4(Ipv4Net::default())))
        }
        other => (other.trunc(), None),
    };
    std::iter::once(first).chain(second)
}

impl IpFilter {
    /// Prepare the policy.
    pub(crate) fn new(def: &IpFilterDef) -> IpFilter {
        IpFilter {
            allow: def.allow,
            networks: def
                .networks
                .iter()
                .copied()
                .flat_map(canonical_nets)
                .collect(),
            refusal: Answer::problem(
                StatusCode::FORBIDDEN,
                "ip-filter",
                "Forbidden",
                "The caller's address is not allowed to call this API.",
            ),
        }
    }

    /// Whether a caller with this address may pass.
    fn passes(&self, ip: Option<IpAddr>) -> bool {
        let listed = ip
            .map(canonical)
            .is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)));
        listed == self.allow
    }
}

impl Policy for IpFilter {
    fn inbound(&self, _req: &mut RequestHeader, ctx: &mut RequestCtx) -> Flow {
        if self.passes(ctx.client_ip) {
            Flow::Continue
        } else {
            Flow::Respond(self.refusal.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::test_util::*;

    fn policy(allow: bool, nets: &[&str]) -> IpFilter {
        IpFilter::new(&IpFilterDef {
            allow,
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
        })
    }

    fn passes(p: &IpFilter, ip: Option<&str>) -> bool {
        let mut c = ctx();
        c.client_ip = ip.map(|i| i.parse().unwrap());
        match p.inbound(&mut req("GET", "/x", &[]), &mut c) {
            Flow::Continue => true,
            Flow::Respond(a) => {
                assert_eq!(a.status, StatusCode::FORBIDDEN);
                assert!(a.is_error);
                false
            }
            Flow::Wait(_) => panic!("ip-filter never waits"),
        }
    }

    #[test]
    fn allow_list() {
        let p = policy(true, &["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]);
        assert!(passes(&p, Some("10.200.3.4")));
        assert!(passes(&p, Some("192.168.1.7")));
        assert!(!passes(&p, Some("192.168.1.8")));
        assert!(!passes(&p, Some("11.0.0.1")));
        assert!(passes(&p, Some("2001:db8::1")));
        assert!(!passes(&p, Some("2001:db9::1")));
        assert!(passes(&p, Some("::ffff:10.1.1.1")));
        assert!(!passes(&p, Some("::ffff:11.1.1.1")));
        assert!(!passes(&p, None));
    }

    #[test]
    fn forbid_list() {
        let p = policy(false, &["10.0.0.0/8", "::1/128"]);
        assert!(!passes(&p, Some("10.0.0.1")));
        assert!(!passes(&p, Some("::ffff:10.0.0.1")));
        assert!(!passes(&p, Some("::1")));
        assert!(passes(&p, Some("127.0.0.1")));
        assert!(passes(&p, Some("2001:db8::1")));
        assert!(passes(&p, None));
    }

    #[test]
    fn mapped_networks_compare_as_ipv4() {
        let p = policy(true, &["::ffff:10.0.0.0/104", "::ffff:1.2.3.4/128"]);
        assert!(passes(&p, Some("10.9.9.9")));
        assert!(passes(&p, Some("1.2.3.4")));
        assert!(passes(&p, Some("::ffff:1.2.3.4")));
        assert!(!passes(&p, Some("1.2.3.5")));
        // `::/0` holds the mapped range, so every IPv4 address too.
        let p = policy(true, &["::/0"]);
        assert!(passes(&p, Some("1.2.3.5")));
        assert!(passes(&p, Some("2001:db8::1")));
        let p = policy(true, &["2001:db8::/32"]);
        assert!(!passes(&p, Some("1.2.3.5")));
        // Host bits set in a listed network do not matter.
        let p = policy(false, &["10.1.2.3/8"]);
        assert!(!passes(&p, Some("10.200.0.1")));
    }
}
