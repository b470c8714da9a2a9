//! What the origin is told about the client, and what the client is told about the origin.
//!
//! The proxy is the edge: what a client sends in `X-Forwarded-For`, `Forwarded`, `X-Real-IP`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` is whatever it wants the origin to believe (an
//! allow-listed address, another scheme). So those are replaced by what the proxy saw, unless
//! the peer is a proxy in front of this one (`[listen] trusted_proxies`): then its statements
//! are kept and the proxy appends its own hop. The origin's `Server` banner, which names its
//! software and version, is dropped unless `[listen] keep_server_header` is set.

use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::ConnInfo;
use crate::config::Cidr;
use crate::http::names::carries;
use crate::origin::StatedField;

/// `X-Forwarded-For`: the chain of client addresses. (Statics: what the proxy states is
/// named by reference.)
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `Forwarded` (RFC 7239): the chain of hops, each with its client, host and scheme.
static FORWARDED: HeaderName = header::FORWARDED;
/// `X-Forwarded-Proto`: the scheme the client used.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`: the original client's address alone.
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The forwarding headers, in the order of [`ForwardingValues`]' ranges.
static NAMES: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &FORWARDED,
    &X_REAL_IP,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
];

/// The forwarding headers' values for one request, written one after another into one buffer,
/// which the fields stated to the origin borrow ([`ForwardingValues::stated`]): no allocation
/// per value, and none checked again as a `HeaderValue`, on every passthrough request.
pub(super) struct ForwardingValues {
    /// Every value.
    text: Vec<u8>,
    /// Where each of [`NAMES`]' values lies in `text`; `None`: the header is dropped.
    ranges: [Option<Range<usize>>; 5],
}

impl ForwardingValues {
    /// The forwarding headers as stated to the origin, each replacing the client's lines of
    /// its name.
    pub(super) fn stated(&self) -> [StatedField<'_>; 5] {
        std::array::from_fn(|i| (NAMES[i], self.ranges[i].clone().map(|r| &self.text[r])))
    }
}

/// The forwarding policy, from `[listen]`.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Peers whose forwarding headers are kept and appended to.
    pub trusted_proxies: Vec<Cidr>,
    /// Pass the origin's `Server` header to the client.
    pub keep_server_header: bool,
}

impl Forwarding {
    /// The forwarding headers of a request going to the origin, from its `headers` as the
    /// client sent them. `host` is the host the client asked for (the target's authority,
    /// else `Host`), when it named one.
    pub(super) fn request(
        &self,
        headers: &HeaderMap,
        conn: &ConnInfo,
        host: Option<HeaderValue>,
    ) -> ForwardingValues {
        let peer = conn.peer.ip().to_canonical();
        let trusted = self.trusts(peer);
        let scheme = if conn.tls { "https" } else { "http" };
        let mut text = Vec::with_capacity(128);
        write_list(
            &mut text,
            trusted.then(|| joined(headers, &X_FORWARDED_FOR)).flatten(),
        );
        let hop_start = text.len();
        write_ip(&mut text, peer);
        let hop = hop_start..text.len();
        let chain = 0..hop.end;
        write_list(
            &mut text,
            trusted.then(|| joined(headers, &FORWARDED)).flatten(),
        );
        forwarded_element(&mut text, hop.clone(), host.as_ref(), scheme);
        let forwarded = chain.end..text.len();
        // Single-valued: a trusted proxy's statement stands, anyone else's is replaced.
        let single = |name: &HeaderName| trusted.then(|| only(headers, name)).flatten();
        let real_ip = match single(&X_REAL_IP) {
            Some(stated) => append(&mut text, stated.as_bytes()),
            None => hop,
        };
        let proto = single(&X_FORWARDED_PROTO).map_or(scheme.as_bytes(), HeaderValue::as_bytes);
        let proto = append(&mut text, proto);
        let forwarded_host = single(&X_FORWARDED_HOST)
            .or(host.as_ref())
            .map(|host| append(&mut text, host.as_bytes()));
        ForwardingValues {
            text,
            ranges: [
                Some(chain),
                Some(forwarded),
                Some(real_ip),
                Some(proto),
                forwarded_host,
            ],
        }
    }

    /// The address a request comes from, for limits counted per client: the peer, or behind
    /// trusted proxies the nearest address in `X-Forwarded-For` that is not one of them (the
    /// rightmost untrusted hop: addresses left of it were written by the client and prove
    /// nothing). An unreadable chain counts as the last trusted hop's own.
    pub(super) fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let Some(chain) = joined(headers, &X_FORWARDED_FOR) else {
            return client;
        };
        for hop in chain.rsplit(',') {
            // Some balancers (Azure Application Gateway) write `ip:port` or `[v6]:port`.
            let hop = hop.trim();
            let parsed = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()));
            match parsed {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !self.trusts(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    /// Whether `ip` (canonical: IPv4 clients of a dual-stack listener as IPv4) is a proxy in
    /// front of this one.
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(ip))
    }

    /// Drops what the origin's answer should not tell the client.
    pub(super) fn response(&self, headers: &mut HeaderMap) {
        // Few answers carry the banner: looked for before a removal hashes its name.
        if !self.keep_server_header && carries(headers, &header::SERVER) {
            headers.remove(header::SERVER);
        }
    }
}

/// All of `name`'s lines joined with `, ` (a list header), if any are there.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    (!values.is_empty()).then(|| values.join(", "))
}

/// `name`'s value when it has exactly one line.
fn only<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Appends `value` to `text`; where it lies.
fn append(text: &mut Vec<u8>, value: &[u8]) -> Range<usize> {
    let start = text.len();
    text.extend_from_slice(value);
    start..text.len()
}

/// Starts `text` with the earlier hops' list, if any, and the separator before this hop.
fn write_list(text: &mut Vec<u8>, earlier: Option<String>) {
    if let Some(earlier) = earlier {
        text.extend_from_slice(earlier.as_bytes());
        text.extend_from_slice(b", ");
    }
}

/// Appends this hop's `Forwarded` element (RFC 7239 §4): `for` (the client's address, already
/// in `text` at `hop`), `host` and `proto`, quoted where the value is not a token (an IPv6
/// address, a host with a port).
fn forwarded_element(
    text: &mut Vec<u8>,
    hop: Range<usize>,
    host: Option<&HeaderValue>,
    scheme: &str,
) {
    let v6 = text[hop.clone()].contains(&b':');
    text.extend_from_slice(if v6 { b"for=\"[" } else { b"for=" });
    text.extend_from_within(hop);
    if v6 {
        text.extend_from_slice(b"]\"");
    }
    // A checked host has no `"` or `\`, so quoting needs no escapes.
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        let quoted = !host.bytes().all(is_tchar);
        text.extend_from_slice(b";host=");
        if quoted {
            text.push(b'"');
        }
        text.extend_from_slice(host.as_bytes());
        if quoted {
            text.push(b'"');
        }
    }
    text.extend_from_slice(b";proto=");
    text.extend_from_slice(scheme.as_bytes());
}

/// Appends `ip` as text; an IPv4 address without the formatter, which every passthrough
/// request would otherwise go through, octet by octet.
fn write_ip(text: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        // Writing into a Vec cannot fail.
        let _ = write!(text, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    // A match, not a search of the list: every byte of every passthrough request's host
    // comes here.
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn forward(policy: &Forwarding, peer: &str, sent: &[(&str, &str)]) -> HeaderMap {
        let sent = sent.iter().map(|(name, value)| (*name, value.as_bytes()));
        forward_to(policy, peer, sent, Some("edge.example:8443"))
    }

    /// The request's headers as hyper's origin connections get them, after every stated value
    /// was checked to be a valid field value (our exchange writes them as they are).
    fn forward_to<'a>(
        policy: &Forwarding,
        peer: &str,
        sent: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        host: Option<&'static str>,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in sent {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        let conn = ConnInfo {
            peer: peer.parse::<SocketAddr>().expect("peer"),
            tls: true,
        };
        let values = policy.request(&headers, &conn, host.map(HeaderValue::from_static));
        for (name, value) in values.stated() {
            if let Some(value) = value {
                assert!(HeaderValue::from_bytes(value).is_ok(), "{name}: {value:?}");
            }
        }
        crate::origin::set_stated(&mut headers, &values.stated());
        headers
    }

    const FORGED: [(&str, &str); 6] = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
        ("forwarded", "for=10.0.0.1"),
        ("x-real-ip", "10.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "internal.example"),
    ];

    #[test]
    fn an_untrusted_peer_cannot_state_anything() {
        let headers = forward(&Forwarding::default(), "[::ffff:203.0.113.9]:5000", &FORGED);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9");
        assert_eq!(
            headers["forwarded"],
            "for=203.0.113.9;host=\"edge.example:8443\";proto=https"
        );
        assert_eq!(headers["x-real-ip"], "203.0.113.9");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "edge.example:8443");
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn a_trusted_proxy_is_believed_and_appended_to() {
        let policy = Forwarding {
            trusted_proxies: vec![Cidr::parse("2001:db8::/32").expect("cidr")],
            keep_server_header: false,
        };
        let headers = forward(&policy, "[2001:db8::5]:5000", &FORGED);
        assert_eq!(
            headers["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 2001:db8::5"
        );
        assert_eq!(
            headers["forwarded"],
            "for=10.0.0.1, for=\"[2001:db8::5]\";host=\"edge.example:8443\";proto=https"
        );
        assert_eq!(headers["x-real-ip"], "10.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "internal.example");
        // With nothing stated, the proxy states what it saw.
        let headers = forward(&policy, "[2001:db8::5]:5000", &[]);
        assert_eq!(headers["x-forwarded-for"], "2001:db8::5");
        assert_eq!(headers["x-real-ip"], "2001:db8::5");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }

    /// A trusted proxy's single-valued statement stands only when it made exactly one, byte for
    /// byte (obs-text too); a host without a port is a token, unquoted; with no host named,
    /// none is stated and the client's is dropped.
    #[test]
    fn single_values_hosts_and_no_host() {
        let trusted = Forwarding {
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            keep_server_header: false,
        };
        let twice = [
            ("x-real-ip", &b"192.0.2.1"[..]),
            ("x-real-ip", b"192.0.2.2"),
        ];
        let headers = forward_to(&trusted, "10.0.0.7:5000", twice, Some("api.example"));
        assert_eq!(headers["x-real-ip"], "10.0.0.7", "two lines: the hop's own");
        assert_eq!(
            headers["forwarded"],
            "for=10.0.0.7;host=api.example;proto=https"
        );
        let obs_text = [("x-real-ip", &b"\xff\x80 a\tb"[..])];
        let headers = forward_to(&trusted, "10.0.0.7:5000", obs_text, None);
        assert_eq!(headers["x-real-ip"].as_bytes(), b"\xff\x80 a\tb");
        let forged = [("x-forwarded-host", &b"internal.example"[..])];
        let headers = forward_to(&Forwarding::default(), "192.0.2.9:5000", forged, None);
        assert!(headers.get("x-forwarded-host").is_none(), "{headers:?}");
        assert_eq!(headers["forwarded"], "for=192.0.2.9;proto=https");
    }

    #[test]
    fn limits_count_the_nearest_untrusted_address() {
        let policy = Forwarding {
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            keep_server_header: false,
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.9"),
        );
        assert_eq!(policy.client_ip(&headers, ip("10.0.0.1")), ip("1.2.3.4"));
        assert_eq!(
            policy.client_ip(&headers, ip("9.9.9.9")),
            ip("9.9.9.9"),
            "an untrusted peer's chain is ignored"
        );
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("1.2.3.4:5678, [2001:db8::1]:443"),
        );
        assert_eq!(
            policy.client_ip(&headers, ip("10.0.0.1")),
            ip("2001:db8::1")
        );
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("junk, 10.0.0.9"));
        assert_eq!(policy.client_ip(&headers, ip("10.0.0.1")), ip("10.0.0.9"));
        assert_eq!(
            policy.client_ip(&HeaderMap::new(), ip("::ffff:10.0.0.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn addresses_are_written_as_the_formatter_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.254.200.109",
            "127.0.0.1",
            "2001:db8::5",
            "::1",
        ] {
            let ip = ip.parse::<IpAddr>().expect("ip");
            let mut text = Vec::new();
            write_ip(&mut text, ip);
            assert_eq!(text, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn the_server_banner_is_dropped_unless_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::SERVER, HeaderValue::from_static("origin/1.2.3"));
        let kept = Forwarding {
            keep_server_header: true,
            ..Forwarding::default()
        };
        kept.response(&mut headers);
        assert!(headers.contains_key(header::SERVER));
        Forwarding::default().response(&mut headers);
        assert!(!headers.contains_key(header::SERVER));
    }
}
