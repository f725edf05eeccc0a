//! The SSRF guard: deliveries never reach loopback, private, link-local, CGNAT or metadata
//! addresses unless the operator allows them. It is applied to the address actually
//! connected to — in the HTTP client's resolver, after DNS — so a hostname that resolves to
//! 127.0.0.1 is refused like the literal, and to IP-literal URLs before any connection.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow_private: bool,
    pub allowlist: Vec<IpNet>,
}

/// The refusal, carried through the HTTP client's error chain to the attempt record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("refused_private: {host} resolves only to private or reserved addresses ({addr})")]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
}

impl Guard {
    pub fn from_config(server: &crate::config::Server) -> Self {
        Self {
            allow_private: server.allow_private_destinations,
            allowlist: server.private_destination_allowlist.clone(),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || !is_private(ip) || self.allowlist.iter().any(|net| net.contains(&ip))
    }
}

/// Whether `ip` is loopback, private, link-local, CGNAT, reserved or multicast — judged on
/// the IPv4 address inside it for IPv6 forms that carry one (mapped, compatible, NAT64,
/// 6to4, Teredo), since a network that routes those reaches the IPv4 host.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => private_v4(v4),
            None => v6.is_multicast() || PRIVATE_V6.iter().any(|net| net.contains(&v6)),
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    ip.is_broadcast() || ip.is_multicast() || PRIVATE_V4.iter().any(|net| net.contains(&ip))
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    match Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len) {
        Ok(net) => net,
        Err(_) => panic!("prefix length"),
    }
}

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    match Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len) {
        Ok(net) => net,
        Err(_) => panic!("prefix length"),
    }
}

/// Parsed once, at compile time: the guard runs on every connection.
const PRIVATE_V4: [Ipv4Net; 10] = [
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 0, 0, 0, 24),
    v4(192, 168, 0, 0, 16),
    v4(198, 18, 0, 0, 15),
    v4(240, 0, 0, 0, 4),
];

const PRIVATE_V6: [Ipv6Net; 5] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    // NAT64 local-use prefix (RFC 8215): its translation targets are the operator's choice.
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
];

/// The IPv4 address an IPv6 address stands for, in the forms that carry one:
/// `::ffff:a.b.c.d` (mapped), `::a.b.c.d` (compatible, deprecated but still routed by some
/// stacks), `64:ff9b::a.b.c.d` (NAT64, RFC 6052), `2002:AABB:CCDD::` (6to4, RFC 3056) and
/// Teredo `2001:0::` (RFC 4380: the client's address, inverted, in the last 32 bits).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    // `::` and `::1` are IPv6's own unspecified and loopback, judged as such.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(last32);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last32);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::from(!u32::from(last32)));
    }
    None
}

/// The HTTP client's resolver: the system's lookup, with refused addresses removed.
#[derive(Clone)]
pub struct Resolver(pub Arc<Guard>);

type Resolved = std::vec::IntoIter<SocketAddr>;
type ResolveError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for Resolver {
    type Response = Resolved;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| guard.permits(a.ip())).collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(allowed.into_iter()),
                (true, Some(first)) => Err(Box::new(Refused { host, addr: first.ip() }) as ResolveError),
                (true, None) => Err(format!("{host} has no addresses").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            // IPv4 carried inside IPv6: NAT64, compatible, 6to4, Teredo.
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.1.2.3",
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101:1::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo client 127.0.0.1
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.5",
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2606:4700::1111",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let guard = Guard { allow_private: false, allowlist: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(guard.permits("127.0.0.1".parse().unwrap()));
        assert!(!guard.permits("10.0.0.1".parse().unwrap()));
        assert!(Guard { allow_private: true, allowlist: vec![] }.permits("10.0.0.1".parse().unwrap()));
    }
}
