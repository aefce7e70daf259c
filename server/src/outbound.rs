//! Where the server's own outbound calls (webhooks) may go.
//!
//! A project admin chooses a webhook's URL, so without a check the server would call, from
//! inside the network, whatever that admin names: the cloud metadata service, a database admin
//! page on loopback, a router. Webhooks therefore never reach loopback, private (RFC 1918),
//! CGNAT, link-local, unique-local, multicast, unspecified, documentation or reserved
//! addresses, unless `CUSTODY_WEBHOOK_ALLOW_NETWORKS` opens a network on purpose.
//!
//! The check runs at registration on literal addresses, and again at every delivery on the
//! addresses the host name resolves to then. The client of that delivery is pinned to exactly
//! those addresses, so a second DNS answer (DNS rebinding) cannot switch it to another one;
//! it follows no redirect (a 3xx is a failed attempt) and uses no proxy from the environment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

use crate::error::{Error, Result};

/// Longest webhook URL accepted.
const MAX_URL_LEN: usize = 2048;
/// How long one delivery may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The outbound rules of this server: the allow-list and the number of attempts per call.
#[derive(Clone, Debug)]
pub struct WebhookPolicy {
    allow: Arc<Vec<IpNet>>,
    /// Attempts of one webhook call before it is marked failed.
    pub max_attempts: i32,
}

impl WebhookPolicy {
    pub fn new(allow: Vec<IpNet>, max_attempts: i32) -> Self {
        WebhookPolicy {
            allow: Arc::new(allow),
            max_attempts,
        }
    }

    /// Checks a URL given to `addWebhook`: http or https, a host, and no literal address the
    /// policy refuses. Host names are checked at every delivery, once resolved.
    pub fn check_url(&self, raw: &str) -> Result<Url> {
        if raw.len() > MAX_URL_LEN {
            return Err(Error::invalid(format!(
                "webhook URLs are at most {MAX_URL_LEN} bytes"
            )));
        }
        let url = Url::parse(raw).map_err(|_| Error::invalid(format!("`{raw}` is not a URL")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid("webhook URLs must be http or https"));
        }
        match url.host() {
            None => Err(Error::invalid("a webhook URL needs a host")),
            Some(Host::Domain(_)) => Ok(url),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map(|()| url),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map(|()| url),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<()> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(why) => Err(Error::invalid(format!(
                "webhooks may not call {ip} ({why} address); CUSTODY_WEBHOOK_ALLOW_NETWORKS \
                 opens such networks on purpose"
            ))),
        }
    }

    /// Why `ip` may not be called, or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        special_purpose(ip)
    }

    /// A client for one delivery to `url`: the host resolved now, every address checked, the
    /// connection pinned to those addresses, no redirects, no proxy.
    pub async fn client_for(&self, url: &Url) -> anyhow::Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(CALL_TIMEOUT);
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow::anyhow!("the webhook URL has no port"))?;
        let builder = match url.host() {
            None => anyhow::bail!("the webhook URL has no host"),
            Some(Host::Ipv4(ip)) => {
                self.ensure_allowed(IpAddr::V4(ip))?;
                builder
            }
            Some(Host::Ipv6(ip)) => {
                self.ensure_allowed(IpAddr::V6(ip))?;
                builder
            }
            Some(Host::Domain(domain)) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                    .await
                    .map_err(|e| anyhow::anyhow!("resolving {domain}: {e}"))?
                    .collect();
                anyhow::ensure!(!addrs.is_empty(), "{domain} resolves to no address");
                // Every address must pass: a name answering one public and one private address
                // must not get through by luck of the draw.
                for addr in &addrs {
                    self.ensure_allowed(addr.ip())
                        .map_err(|e| anyhow::anyhow!("{domain} resolves to {e}"))?;
                }
                builder.resolve_to_addrs(domain, &addrs)
            }
        };
        Ok(builder.build()?)
    }

    fn ensure_allowed(&self, ip: IpAddr) -> anyhow::Result<()> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(why) => anyhow::bail!(
                "{ip}, a {why} address: refused (CUSTODY_WEBHOOK_ALLOW_NETWORKS opens networks)"
            ),
        }
    }
}

/// Address ranges that are not the public internet, with what they are.
fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[(&str, &str)] = &[
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved or broadcast"),
    ];
    RANGES.iter().find_map(|(net, why)| {
        let net: Ipv4Net = net.parse().expect("a valid IPv4 network");
        net.contains(&ip).then_some(*why)
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Addresses that carry an IPv4 address the packets end up at: judged by that address.
    let embedded_v4 = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    let nat64: Ipv6Net = "64:ff9b::/96".parse().expect("valid");
    if nat64.contains(&ip) {
        return special_v4(embedded_v4(segments[6], segments[7]));
    }
    let six_to_four: Ipv6Net = "2002::/16".parse().expect("valid");
    if six_to_four.contains(&ip) {
        return special_v4(embedded_v4(segments[1], segments[2]));
    }
    const RANGES: &[(&str, &str)] = &[
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("64:ff9b:1::/48", "local NAT64"),
        ("100::/64", "discard"),
        ("2001::/23", "IETF protocol (Teredo, …)"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique-local (cloud metadata)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ];
    RANGES.iter().find_map(|(net, why)| {
        let net: Ipv6Net = net.parse().expect("a valid IPv6 network");
        net.contains(&ip).then_some(*why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> WebhookPolicy {
        WebhookPolicy::new(allow.iter().map(|n| n.parse().unwrap()).collect(), 8)
    }

    #[test]
    fn special_addresses_are_refused() {
        let p = policy(&[]);
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(p.refusal(ip).is_some(), "{ip} is allowed");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(p.refusal(ip), None, "{ip} is refused");
        }
    }

    #[test]
    fn the_allow_list_opens_networks() {
        let p = policy(&["127.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(p.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(p.refusal("::ffff:127.0.0.1".parse().unwrap()), None);
        assert_eq!(p.refusal("10.9.9.9".parse().unwrap()), None);
        assert!(p.refusal("169.254.169.254".parse().unwrap()).is_some());
        assert!(p.refusal("::1".parse().unwrap()).is_some());
    }

    #[test]
    fn registration_checks_scheme_and_literal_addresses() {
        let p = policy(&[]);
        assert!(p.check_url("https://hooks.example.com/x").is_ok());
        assert!(
            p.check_url("http://localhost:8080/").is_ok(),
            "names wait for delivery"
        );
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "gopher://127.0.0.1/",
            "http://127.0.0.1:9/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[fd00:ec2::254]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "not a url",
        ] {
            assert!(
                matches!(p.check_url(bad), Err(Error::InvalidInput(_))),
                "{bad} accepted"
            );
        }
    }
}
