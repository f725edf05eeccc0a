//! The client address: the socket peer, unless that peer is a trusted proxy, in which case
//! the nearest X-Forwarded-For address that is not itself a trusted proxy.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Walk right to left: each hop was appended by the proxy before it.
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

/// The URL a request was sent to, without its query: from a trusted proxy, its
/// `X-Forwarded-Proto` and `X-Forwarded-Host`; otherwise `http://` and the Host header.
pub fn called_url(peer: IpAddr, headers: &HeaderMap, path: &str, trusted_proxies: &[IpNet]) -> Option<String> {
    let first = |name: &str| {
        let value = headers.get(name)?.to_str().ok()?;
        Some(value.split(',').next()?.trim().to_string()).filter(|v| !v.is_empty())
    };
    let proxied = trusted_proxies.iter().any(|net| net.contains(&peer));
    let forwarded = |name: &str| if proxied { first(name) } else { None };
    let scheme = forwarded("x-forwarded-proto").filter(|p| p == "http" || p == "https").unwrap_or("http".into());
    let host = forwarded("x-forwarded-host").or_else(|| first("host"))?;
    Some(format!("{scheme}://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_called_url_believes_forwarded_headers_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("host", "10.0.0.5:8080".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        headers.insert("x-forwarded-host", "hooks.example.com".parse().unwrap());
        let path = "/v1/hooks/acme/twilio";
        let via_proxy = called_url("10.0.0.1".parse().unwrap(), &headers, path, &proxies);
        assert_eq!(via_proxy.as_deref(), Some("https://hooks.example.com/v1/hooks/acme/twilio"));
        let direct = called_url("192.0.2.1".parse().unwrap(), &headers, path, &proxies);
        assert_eq!(direct.as_deref(), Some("http://10.0.0.5:8080/v1/hooks/acme/twilio"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.2".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &headers, &proxies),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip("192.0.2.1".parse().unwrap(), &headers, &proxies), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &HeaderMap::new(), &proxies),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
