//! SSRF guard: a registry host named in an image (or a redirect, or a token realm a registry
//! names) must not turn the webhook into a way to reach link-local, metadata or loopback
//! addresses.
//!
//! The guard judges what is dialled, never the text a tenant wrote: a URL is judged after
//! `url::Url` has normalised its host (`127.1`, `0x7f.1`, `2130706433` and `0177.0.0.1` are
//! all `127.0.0.1` by then, and an HTTP client dials such IP literals without asking DNS), and a
//! name is judged on every address it resolves to (all must pass, or none is used).
//!
//! Trust is per `host:port`: a registry the operator lists under `registries` (or as a mirror)
//! may be loopback at exactly that host and port. The DNS hook of an HTTP client does not see
//! the port, so each trusted `host:port` gets its own client whose resolver trusts that one
//! name, and that client is only used for URLs with that exact host and port (see
//! `Registries::client_for`); redirects are followed by hand and judged hop by hop.
//!
//! Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed unless listed in
//! `network.denyCidrs`: in-cluster registries live there, and the kubelet pulls from any address
//! a tenant names anyway. `denyCidrs` holds for every host, listed or not.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use globset::GlobSet;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::{Config, Error, registry::wire::clean};

/// A URL's host (as `url::Url` normalises it; IPv6 in brackets) and port (the scheme's default
/// when none is written).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    pub fn of(url: &Url) -> Option<Authority> {
        Some(Authority { host: url.host_str()?.to_ascii_lowercase(), port: url.port_or_known_default()? })
    }

    /// A configured `host[:port]`, reached over `scheme`.
    pub fn parse(host_port: &str, scheme: &str) -> Option<Authority> {
        Authority::of(&Url::parse(&format!("{scheme}://{host_port}/")).ok()?)
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug)]
pub struct Guard {
    deny: Vec<IpNet>,
    /// Empty means every registry is allowed.
    allow: Option<GlobSet>,
    /// Registries and mirrors the operator listed: these may be loopback at exactly this
    /// host and port.
    trusted: HashSet<Authority>,
}

impl Guard {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let allow = if config.network.allow_registries.is_empty() {
            None
        } else {
            Some(
                crate::config::glob_set(&config.network.allow_registries)
                    .map_err(|e| Error::Config(format!("network.allowRegistries: {e}")))?,
            )
        };
        let trusted = trusted_authorities(config)?.into_iter().map(|(authority, _)| authority).collect();
        Ok(Guard { deny: config.network.deny_cidrs.clone(), allow, trusted })
    }

    pub fn is_trusted(&self, authority: &Authority) -> bool {
        self.trusted.contains(authority)
    }

    /// Checks a URL before anything is sent to it: scheme, the allowlist, and an IP-literal host
    /// (which no resolver sees). A domain's addresses are judged by [`GuardedResolver`].
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("only http and https URLs are followed".into());
        }
        let Some(authority) = Authority::of(url) else { return Err("the URL has no host".into()) };
        if let Some(allow) = &self.allow
            && !allow.is_match(authority.to_string())
            && !allow.is_match(&authority.host)
        {
            return Err(format!("{} is not in network.allowRegistries", clean(&authority.to_string())));
        }
        let trusted = self.is_trusted(&authority);
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), trusted),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), trusted),
            Some(Host::Domain(name)) if looks_numeric(name) => {
                Err("a host name that looks like a number is not resolved".into())
            }
            Some(Host::Domain(_)) => Ok(()),
            None => Err("the URL has no host".into()),
        }
    }

    /// Whether `ip` may be dialled (`trusted`: for a listed registry's own host and port); the
    /// reason if not. An IPv6 address that carries an IPv4 address is judged as both.
    pub fn check_ip(&self, ip: IpAddr, trusted: bool) -> Result<(), String> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for ip in std::iter::once(ip).chain(embedded) {
            if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
                return Err(format!("address {ip} is in network.denyCidrs ({net})"));
            }
            if is_local(ip) && !trusted {
                return Err(format!(
                    "address {ip} is loopback or unspecified; list the registry (host:port) under `registries` to allow it"
                ));
            }
            if is_multicast_or_broadcast(ip) {
                return Err(format!("address {ip} is not a unicast address"));
            }
        }
        Ok(())
    }

    /// Every address `name` resolved to must pass: one refused address refuses the name.
    pub fn check_addresses(&self, addrs: &[SocketAddr], trusted: bool) -> Result<(), String> {
        if addrs.is_empty() {
            return Err("the name has no address".into());
        }
        addrs.iter().try_for_each(|addr| self.check_ip(addr.ip(), trusted))
    }
}

/// Every `host:port` the operator listed (registries, then mirrors), with the registry entry it
/// came from (a mirror not listed itself has none).
pub fn trusted_authorities(config: &Config) -> Result<Vec<(Authority, Option<usize>)>, Error> {
    let scheme_of = |host: &str| match config.registries.iter().find(|r| r.host == host) {
        Some(r) if r.plain_http => "http",
        _ => "https",
    };
    let parse = |host: &str| {
        Authority::parse(host, scheme_of(host))
            .ok_or_else(|| Error::Config(format!("registries: {host:?} is not a valid host[:port]")))
    };
    let mut out: Vec<(Authority, Option<usize>)> = Vec::new();
    for (i, registry) in config.registries.iter().enumerate() {
        let authority = parse(&registry.host)?;
        if !out.iter().any(|(a, _)| *a == authority) {
            out.push((authority, Some(i)));
        }
    }
    for mirror in config.registries.iter().flat_map(|r| &r.mirrors) {
        let authority = parse(mirror)?;
        if !out.iter().any(|(a, _)| *a == authority) {
            out.push((authority, None));
        }
    }
    Ok(out)
}

/// Loopback, or an address the kernel dials as loopback (`0.0.0.0/8`, `::`).
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// A name whose last label is a number (`1.2.3.4.5`, `0x7f`): resolvers read such names as
/// addresses in ways that differ between libraries, so they are never looked up.
fn looks_numeric(name: &str) -> bool {
    let last = name.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let digits = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match digits {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Why the guard refused an address or a name; the resolver's refusal is found again, by type,
/// in the HTTP client's error chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by the network guard: {}", self.0)
    }
}

impl std::error::Error for Refusal {}

/// A DNS resolver for reqwest that refuses a name if any address it resolves to is refused.
/// `trusted_name` is the host of the one listed registry whose client this resolver serves.
#[derive(Clone)]
pub struct GuardedResolver {
    pub guard: Arc<Guard>,
    pub trusted_name: Option<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let trusted = self.trusted_name.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let refuse = |reason: String| -> Box<dyn std::error::Error + Send + Sync> { Box::new(Refusal(reason)) };
            if looks_numeric(&host) {
                return Err(refuse(format!("{host}: a numeric host name is not resolved")));
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            guard.check_addresses(&addrs, trusted).map_err(refuse)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(yaml: &str) -> Guard {
        Guard::new(&Config::parse(yaml).unwrap()).unwrap()
    }

    fn check(g: &Guard, url: &str) -> Result<(), String> {
        g.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn metadata_and_link_local_refused() {
        let g = guard("");
        let err = check(&g, "https://169.254.169.254/").unwrap_err();
        assert!(err.contains("denyCidrs"), "{err}");
        assert!(check(&g, "https://[fe80::1]:5000/").is_err());
        assert!(check(&g, "https://[::ffff:169.254.169.254]/").is_err());
        assert!(check(&g, "https://ghcr.io/").is_ok());
    }

    #[test]
    fn every_spelling_of_an_address_is_judged_as_that_address() {
        let g = guard("");
        for url in [
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0xA9FEA9FE/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://169.254.169.254./",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
        ] {
            let err = check(&g, url).unwrap_err();
            assert!(err.contains("169.254.0.0/16"), "{url}: {err}");
        }
        for url in
            ["http://127.1/", "http://0x7f.1/", "http://2130706433/", "http://0177.0.0.1/", "http://0/", "http://[::]/"]
        {
            let err = check(&g, url).unwrap_err();
            assert!(err.contains("loopback"), "{url}: {err}");
        }
        assert!(check(&g, "http://224.0.0.1/").unwrap_err().contains("unicast"));
        assert!(check(&g, "http://255.255.255.255/").unwrap_err().contains("unicast"));
        // A private address is allowed by default.
        assert!(check(&g, "http://10.1.2.3/").is_ok());
        assert!(check(&g, "http://[fd12::1]/").is_ok());
    }

    #[test]
    fn a_listed_registry_is_trusted_at_its_host_and_port_only() {
        let g = guard(
            "registries: [{ host: '127.0.0.1:5000', plainHttp: true }, { host: 'localhost', mirrors: ['[::1]:6000'] }]",
        );
        assert!(check(&g, "http://127.0.0.1:5000/").is_ok());
        assert!(check(&g, "http://127.1:5000/").is_ok(), "the same address and port, spelt otherwise");
        assert!(check(&g, "http://127.0.0.1:5001/").unwrap_err().contains("loopback"));
        assert!(check(&g, "http://127.0.0.1/").unwrap_err().contains("loopback"));
        assert!(check(&g, "https://[::1]:6000/").is_ok(), "a mirror");
        assert!(check(&g, "https://[::1]:6001/").is_err());
        assert!(g.is_trusted(&Authority { host: "localhost".into(), port: 443 }));
        assert!(!g.is_trusted(&Authority { host: "localhost".into(), port: 80 }));
        // denyCidrs holds for listed registries too.
        let g = guard("registries: [{ host: '127.0.0.1:5000' }]\nnetwork: { denyCidrs: ['127.0.0.0/8'] }");
        assert!(check(&g, "https://127.0.0.1:5000/").unwrap_err().contains("denyCidrs"));
    }

    #[test]
    fn a_name_is_refused_if_any_of_its_addresses_is() {
        let g = guard("network: { denyCidrs: ['10.9.0.0/16'] }");
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        assert!(g.check_addresses(&[addr("10.1.0.1"), addr("192.0.2.1")], false).is_ok());
        for addrs in [[addr("192.0.2.1"), addr("10.9.0.1")], [addr("10.9.0.1"), addr("192.0.2.1")]] {
            assert!(g.check_addresses(&addrs, true).unwrap_err().contains("denyCidrs"), "{addrs:?}");
        }
        assert!(g.check_addresses(&[addr("192.0.2.1"), addr("127.0.0.1")], false).is_err());
        assert!(g.check_addresses(&[addr("192.0.2.1"), addr("127.0.0.1")], true).is_ok());
        assert!(g.check_addresses(&[], false).is_err());
    }

    #[test]
    fn only_web_urls_with_hosts() {
        let g = guard("");
        assert!(check(&g, "file:///etc/passwd").unwrap_err().contains("http"));
        assert!(check(&g, "ftp://ghcr.io/").is_err());
    }

    #[test]
    fn numeric_names() {
        for name in ["1.2.3.4.5", "a.0x7f", "2130706433", "x.1."] {
            assert!(looks_numeric(name), "{name}");
        }
        for name in ["ghcr.io", "1password.com", "0x.io", "a1", ""] {
            assert!(!looks_numeric(name), "{name}");
        }
    }

    #[test]
    fn allowlist() {
        let g = guard("network: { allowRegistries: ['ghcr.io', '*.internal:5000'] }");
        assert!(check(&g, "https://ghcr.io/").is_ok());
        assert!(check(&g, "https://reg.internal:5000/").is_ok());
        let err = check(&g, "https://docker.io/").unwrap_err();
        assert!(err.contains("allowRegistries"), "{err}");
    }
}
