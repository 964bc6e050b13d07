//! SSRF guard: a registry host named in an image must not turn the webhook into a way to reach
//! link-local, metadata or loopback addresses. Checked on every address a name resolves to, before
//! any connection, and on IP literals (which skip DNS).

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use globset::GlobSet;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{Config, Error};

#[derive(Debug)]
pub struct Guard {
    deny: Vec<IpNet>,
    /// Empty means every registry is allowed.
    allow: Option<GlobSet>,
    /// Host names (without port) of registries configured by the operator: these may be loopback
    /// or private, because an operator said so.
    trusted: HashSet<String>,
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
        let mut trusted = HashSet::new();
        for registry in &config.registries {
            trusted.insert(strip_port(&registry.host).to_string());
            trusted.extend(registry.mirrors.iter().map(|m| strip_port(m).to_string()));
        }
        Ok(Guard { deny: config.network.deny_cidrs.clone(), allow, trusted })
    }

    /// Checks a `host[:port]` before anything is sent: the allowlist, and IP literals.
    pub fn check_host(&self, host_port: &str) -> Result<(), Error> {
        let refuse = |reason: String| Err(Error::Refused { registry: host_port.to_string(), reason });
        if let Some(allow) = &self.allow
            && !allow.is_match(host_port)
            && !allow.is_match(strip_port(host_port))
        {
            return refuse("not in network.allowRegistries".into());
        }
        let host = strip_port(host_port);
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.check_ip(host, ip).map_err(|reason| Error::Refused { registry: host_port.to_string(), reason })?;
        }
        Ok(())
    }

    /// Whether `host` (no port) may connect to `ip`; the reason if not.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(format!("address {ip} is in network.denyCidrs ({net})"));
        }
        if (ip.is_loopback() || ip.is_unspecified()) && !self.trusted.contains(host) {
            return Err(format!("address {ip} is loopback; configure the registry under `registries` to allow it"));
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
pub fn strip_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return host_port.find(']').map_or(host_port, |i| &host_port[..=i]);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// A DNS resolver for reqwest that refuses names resolving to denied addresses.
#[derive(Clone)]
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                guard.check_ip(&host, addr.ip()).map_err(|reason| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("{host} refused by the network guard: {reason}").into()
                })?;
            }
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

    #[test]
    fn metadata_and_link_local_refused() {
        let g = guard("");
        let err = g.check_host("169.254.169.254").unwrap_err().to_string();
        assert!(err.contains("denyCidrs"), "{err}");
        assert!(g.check_host("[fe80::1]:5000").is_err());
        assert!(g.check_host("[::ffff:169.254.169.254]").is_err());
        assert!(g.check_host("ghcr.io").is_ok());
    }

    #[test]
    fn loopback_only_when_configured() {
        let g = guard("");
        let err = g.check_host("127.0.0.1:5000").unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        let g = guard("registries: [{ host: '127.0.0.1:5000', plainHttp: true }]");
        assert!(g.check_host("127.0.0.1:5000").is_ok());
        assert!(g.check_ip("localhost", "127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn allowlist() {
        let g = guard("network: { allowRegistries: ['ghcr.io', '*.internal:5000'] }");
        assert!(g.check_host("ghcr.io").is_ok());
        assert!(g.check_host("reg.internal:5000").is_ok());
        let err = g.check_host("docker.io").unwrap_err().to_string();
        assert!(err.contains("allowRegistries"), "{err}");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.io:5000"), "a.io");
        assert_eq!(strip_port("a.io"), "a.io");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
    }
}
