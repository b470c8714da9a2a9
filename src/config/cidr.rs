//! IP address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), for `[listen]
//! trusted_proxies`: the peers whose forwarding headers are believed.

use std::fmt;
use std::net::IpAddr;

/// One address range: an address and how many of its leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The range's first address (bits past `prefix` cleared).
    network: IpAddr,
    /// Leading bits that must match: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix`, or a bare address (one host). The address's bits past the
    /// prefix must be zero, so that a typo such as `10.1.2.3/8` is caught, not widened.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{address}` is not an IPv4 or IPv6 address"))?;
        let bits = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("`/{p}` is not a prefix length from 0 to {bits}"))?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != bits_of(network) {
            return Err(format!(
                "`{text}` has bits set past /{prefix}; did you mean the network's first address?"
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a
    /// dual-stack listener sees IPv4 peers) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == bits_of(self.network)
    }

    /// `ip`'s bits with those past the prefix cleared.
    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        bits_of(ip) & u128::MAX.checked_shl(host_bits).unwrap_or(0)
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn ranges_contain_their_addresses_only() {
        let private = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(private.contains(ip("10.255.0.1")));
        assert!(private.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(!private.contains(ip("::a00:1")), "IPv6 is not IPv4");
        let host = Cidr::parse("192.0.2.7").expect("cidr");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let everything = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(Cidr::parse("::/0").expect("cidr").contains(ip("::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_ranges_are_errors() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "10.1.2.3/8",
            "localhost",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
