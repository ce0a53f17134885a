//! Webhook destinations: which URLs a tenant's webhook may be sent to. One
//! home for the rule the API applies at schedule time and the runner applies
//! again when it connects:
//!
//! - a destination is an `http://` or `https://` URL with a host and a valid
//!   port (anything else is a 400 when the timer is scheduled);
//! - unless the operator allows it, no address the request could reach — a
//!   literal in the URL, or any address its name resolves to when the runner
//!   connects — may be loopback, private, shared (CGNAT), link-local,
//!   multicast, unspecified, broadcast, reserved, documentation or
//!   IPv4-mapped: a tenant must not reach the operator's own network (SSRF);
//! - names in private-use namespaces (`localhost`, `*.internal`, `*.local`,
//!   `metadata.google.internal`, …) are refused by name at schedule time, for
//!   a clear error; every other name is judged by its addresses at connect
//!   time, so a name that resolves (or rebinds) to a private address is
//!   refused too.
//!
//! The operator opens holes with an allow-list of networks (CIDRs) and host
//! names, or allows every destination (tests, a single-user machine).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Which destinations the operator allows beyond public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Every destination is allowed, private ones included (`ACTION_WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Networks allowed although the rule refuses them (`10.1.0.0/16`, `127.0.0.1/32`).
    pub allowed_networks: Vec<IpNet>,
    /// Host names allowed whatever they resolve to (lower case, exact).
    pub allowed_hosts: BTreeSet<String>,
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The URL is not a usable http(s) URL.
    #[error("must be an http:// or https:// URL with a host and a valid port ({0})")]
    Malformed(String),
    /// The host is a name in a private-use namespace.
    #[error("{host} is a private name; the operator has not allowed it")]
    PrivateName {
        /// The name.
        host: String,
    },
    /// An address the request would reach is in a refused range.
    #[error("{host} is {address}, a {range} address; the operator has not allowed it")]
    PrivateAddress {
        /// The host as the URL names it.
        host: String,
        /// The address.
        address: IpAddr,
        /// Which range (`loopback`, `private`, …).
        range: &'static str,
    },
}

/// Parses a webhook URL: `http` or `https`, a host, a valid port, no whitespace.
pub fn parse_url(text: &str) -> Result<Url, Refused> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refused::Malformed("whitespace or a control character".into()));
    }
    // Spelled out: the URL standard would also read `http:host` and `http:///host` as `http://host`.
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let after = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let Some(after) = after else {
        return Err(Refused::Malformed("another scheme".into()));
    };
    let prefix_len = lower.len() - after.len();
    if text[prefix_len..].starts_with(['/', '\\']) {
        return Err(Refused::Malformed("no host".into()));
    }
    let url = Url::parse(text).map_err(|e| Refused::Malformed(e.to_string()))?;
    match url.host() {
        None => Err(Refused::Malformed("no host".into())),
        Some(Host::Domain("")) => Err(Refused::Malformed("empty host".into())),
        Some(_) => Ok(url),
    }
}

impl DestinationPolicy {
    /// A policy allowing every destination.
    pub fn allow_all() -> Self {
        Self { allow_private: true, ..Self::default() }
    }

    /// Parses `text` and checks what can be judged without DNS: a literal
    /// address, or a private-use name (schedule time).
    pub fn check_url(&self, text: &str) -> Result<Url, Refused> {
        self.check_without_dns(text, true)
    }

    /// Parses `text` and checks a literal address (before each attempt:
    /// literals skip DNS, so the resolver never sees them). Names are judged
    /// by the addresses they resolve to when the runner connects.
    pub fn check_literal(&self, text: &str) -> Result<Url, Refused> {
        self.check_without_dns(text, false)
    }

    fn check_without_dns(&self, text: &str, judge_names: bool) -> Result<Url, Refused> {
        let url = parse_url(text)?;
        if self.allow_private {
            return Ok(url);
        }
        match url.host() {
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if judge_names && is_private_name(&name) && !self.allowed_hosts.contains(&name) {
                    return Err(Refused::PrivateName { host: name });
                }
            }
            Some(Host::Ipv4(v4)) => self.check_address(&v4.to_string(), IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_address(&format!("[{v6}]"), IpAddr::V6(v6))?,
            None => return Err(Refused::Malformed("no host".into())),
        }
        Ok(url)
    }

    /// Checks one address that `host` resolved to (connect time).
    pub fn check_resolved(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if self.allowed_hosts.contains(&name) {
            return Ok(());
        }
        self.check_address(&name, address)
    }

    fn check_address(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        if self.allow_private || self.allowed_networks.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        match refused_range(address) {
            Some(range) => Err(Refused::PrivateAddress { host: host.to_owned(), address, range }),
            None => Ok(()),
        }
    }
}

/// Parses one allow-list entry: a CIDR (`10.0.0.0/8`), an address (`127.0.0.1`,
/// a /32 or /128) or a host name.
pub fn parse_allowed(entry: &str) -> Result<AllowedEntry, String> {
    let entry = entry.trim();
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(AllowedEntry::Network(net.trunc()));
    }
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(AllowedEntry::Network(IpNet::from(address)));
    }
    let name = entry.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(AllowedEntry::Host(name))
    } else {
        Err(format!("{entry:?} is not a CIDR, an address or a host name"))
    }
}

/// One entry of the operator's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedEntry {
    /// A network.
    Network(IpNet),
    /// A host name.
    Host(String),
}

impl FromIterator<AllowedEntry> for DestinationPolicy {
    fn from_iter<I: IntoIterator<Item = AllowedEntry>>(entries: I) -> Self {
        let mut policy = Self::default();
        for entry in entries {
            match entry {
                AllowedEntry::Network(net) => policy.allowed_networks.push(net),
                AllowedEntry::Host(name) => {
                    policy.allowed_hosts.insert(name);
                }
            }
        }
        policy
    }
}

/// Names in private-use namespaces: they only ever mean the operator's own network.
fn is_private_name(name: &str) -> bool {
    const NAMES: [&str; 3] = ["localhost", "metadata", "metadata.google.internal"];
    const SUFFIXES: [&str; 6] = [".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan"];
    NAMES.contains(&name) || SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

/// The refused range `address` lies in, if any.
pub fn refused_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 ranges a tenant's webhook may not reach (RFC 6890 special-purpose registry).
const REFUSED_V4: [(Ipv4Net, &str); 15] = [
    (v4(0, 0, 0, 0, 8), "unspecified"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 0, 0, 0, 24), "reserved"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "reserved"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 ranges a tenant's webhook may not reach. IPv4-mapped and
/// IPv4-compatible addresses are refused whole: a public destination never
/// needs them, and they would smuggle an IPv4 address past the IPv4 rules.
const REFUSED_V6: [(Ipv6Net, &str); 11] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), "IPv4-mapped"),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible"),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local (private)"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

fn refused_v4(address: Ipv4Addr) -> Option<&'static str> {
    REFUSED_V4.iter().find(|(net, _)| net.contains(&address)).map(|(_, range)| *range)
}

fn refused_v6(address: Ipv6Addr) -> Option<&'static str> {
    REFUSED_V6.iter().find(|(net, _)| net.contains(&address)).map(|(_, range)| *range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &DestinationPolicy, url: &str) -> Option<Refused> {
        policy.check_url(url).err()
    }

    #[test]
    fn every_private_form_of_the_audit_is_refused_by_default() {
        let policy = DestinationPolicy::default();
        for url in [
            "http://127.0.0.1:9464/metrics",
            "http://[::1]/",
            "http://localhost:4000/",
            "http://LOCALHOST./",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://172.20.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://printer.local/",
            "http://api.svc.cluster.internal/",
        ] {
            assert!(refused(&policy, url).is_some(), "{url} was accepted");
        }
    }

    #[test]
    fn public_destinations_pass() {
        let policy = DestinationPolicy::default();
        for url in [
            "https://example.com/hook",
            "http://8.8.8.8:8080/x",
            "https://[2606:4700::1111]/",
            "https://a.b.c.d.e/",
        ] {
            assert_eq!(refused(&policy, url), None, "{url}");
        }
    }

    #[test]
    fn unparsable_urls_are_malformed() {
        let policy = DestinationPolicy::allow_all();
        for url in [
            "http://[zz/",
            "http://example.com:99999/",
            "ftp://example.com/",
            "http:///path",
            "https://",
            "http://a b/",
            "mailto:x@y",
        ] {
            assert!(matches!(refused(&policy, url), Some(Refused::Malformed(_))), "{url}");
        }
    }

    #[test]
    fn the_allow_list_opens_networks_and_names() {
        let policy: DestinationPolicy = ["127.0.0.1", "10.1.0.0/16", "Receiver.Internal"]
            .into_iter()
            .map(|e| parse_allowed(e).expect("valid entry"))
            .collect();
        assert_eq!(refused(&policy, "http://127.0.0.1:8080/"), None);
        assert!(refused(&policy, "http://127.0.0.2:8080/").is_some());
        assert_eq!(refused(&policy, "http://10.1.200.3/"), None);
        assert!(refused(&policy, "http://10.2.0.1/").is_some());
        assert_eq!(refused(&policy, "http://receiver.internal/"), None);
        assert_eq!(policy.check_resolved("receiver.internal", "10.9.9.9".parse().unwrap()), Ok(()));
        assert!(policy.check_resolved("other.example", "10.9.9.9".parse().unwrap()).is_err());
        assert_eq!(policy.check_resolved("other.example", "10.1.0.9".parse().unwrap()), Ok(()));
        assert!(parse_allowed("not a host").is_err());
        assert!(parse_allowed("10.0.0.0/33").is_err());
    }

    #[test]
    fn connect_time_judges_every_resolved_address() {
        let policy = DestinationPolicy::default();
        let err = policy.check_resolved("rebind.example", "127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rebind.example is 127.0.0.1, a loopback address; the operator has not allowed it"
        );
        assert_eq!(policy.check_resolved("example.com", "93.184.216.34".parse().unwrap()), Ok(()));
        assert!(DestinationPolicy::allow_all().check_resolved("x", "127.0.0.1".parse().unwrap()).is_ok());
    }
}
