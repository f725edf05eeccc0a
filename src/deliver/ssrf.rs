//! The SSRF guard: deliveries never reach loopback, private, link-local, CGNAT or metadata
//! addresses unless the operator allows them. It is applied to the address actually
//! connected to — in the HTTP client's resolver, after DNS — so a hostname that resolves to
//! 127.0.0.1 is refused like the literal, and to IP-literal URLs before any connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow_private: bool,
    pub allowlist: Vec<IpNet>,
}

/// The refusal, carried through the HTTP client's error chain to the attempt record.
#[derive(Debug, thiserror::Error)]
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

pub fn is_private(ip: IpAddr) -> bool {
    const V4: [&str; 10] = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "240.0.0.0/4",
    ];
    const V6: [&str; 5] = ["::/128", "::1/128", "fc00::/7", "fe80::/10", "64:ff9b:1::/48"];
    match ip {
        IpAddr::V4(v4) => {
            v4.is_broadcast()
                || V4.iter().any(|n| n.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)))
                || v4.is_multicast()
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => v6.is_multicast() || V6.iter().any(|n| n.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))),
        },
    }
}

/// The HTTP client's resolver: the system's lookup, with refused addresses removed.
pub struct Resolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| guard.permits(a.ip())).collect();
            match (allowed.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                (true, Some(first)) => {
                    Err(Box::new(Refused { host, addr: first.ip() }) as Box<dyn std::error::Error + Send + Sync>)
                }
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
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.5", "8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let guard = Guard { allow_private: false, allowlist: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(guard.permits("127.0.0.1".parse().unwrap()));
        assert!(!guard.permits("10.0.0.1".parse().unwrap()));
        assert!(Guard { allow_private: true, allowlist: vec![] }.permits("10.0.0.1".parse().unwrap()));
    }
}
