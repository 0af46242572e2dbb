//! `ipaddr`, `ipv4` and `ipv6`: the everyday part of Ansible's address filters
//! (ansible.utils), so an inventory can hold `10.1.1.201/24` once and a template can
//! take the address, network, prefix or netmask from it.
//!
//! Like Ansible's, the filter returns the value when it is a valid address (or the
//! part the query asks for) and `false` when it is not, so it can be chained and used
//! in conditions; given a list, it keeps the items that pass. Addresses are
//! `std::net` addresses, IPv4 and IPv6; a prefix is written `/24` or, for IPv4, as a
//! netmask `/255.255.255.0`. A query troupe does not know is an error, not `false`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use minijinja::value::ValueKind;
use minijinja::{Error, State, Value};

use crate::filters::{defined, invalid};

/// An address with its prefix length (the full width when none was written).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Net {
    v6: bool,
    ip: u128,
    prefix: u32,
    /// Whether the value had a `/prefix`.
    cidr: bool,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let (v6, ip) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let width = if v6 { 128 } else { 32 };
        let prefix = match prefix {
            None => width,
            Some(p) if !v6 && p.contains('.') => {
                let mask = u32::from(p.parse::<Ipv4Addr>().ok()?);
                let ones = mask.leading_ones();
                // a netmask's ones are contiguous
                if mask.checked_shl(ones).unwrap_or(0) != 0 {
                    return None;
                }
                ones
            }
            Some(p) => {
                let n: u32 = p.parse().ok()?;
                if n > width {
                    return None;
                }
                n
            }
        };
        Some(Net {
            v6,
            ip,
            prefix,
            cidr: s.contains('/'),
        })
    }

    fn width(&self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }

    fn mask(&self) -> u128 {
        let host_bits = self.width() - self.prefix;
        let all = if self.v6 { u128::MAX } else { u128::from(u32::MAX) };
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1) & all
        }
    }

    fn network(&self) -> u128 {
        self.ip & self.mask()
    }

    fn last(&self) -> u128 {
        let all = if self.v6 { u128::MAX } else { u128::from(u32::MAX) };
        self.network() | (!self.mask() & all)
    }

    /// Number of addresses, saturated at u128::MAX for a whole IPv6 space.
    fn size(&self) -> u128 {
        let host_bits = self.width() - self.prefix;
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    /// A /31 or /32 (/127, /128): every address is usable, none is "the network".
    fn tiny(&self) -> bool {
        self.prefix + 1 >= self.width()
    }

    fn fmt(&self, ip: u128) -> String {
        if self.v6 {
            Ipv6Addr::from(ip).to_string()
        } else {
            Ipv4Addr::from(ip as u32).to_string()
        }
    }

    fn contains(&self, other: &Net) -> bool {
        self.v6 == other.v6 && other.prefix >= self.prefix && (other.ip & self.mask()) == self.network()
    }
}

/// One value through one query: `None` is Ansible's `false`.
fn query_one(v: &Value, query: &str, version: Option<u8>) -> Result<Option<Value>, Error> {
    let Some(net) = v.as_str().and_then(Net::parse) else {
        return Ok(None);
    };
    if let Some(want) = version
        && (want == 6) != net.v6
    {
        return Ok(None);
    }
    let s = |x: String| Some(Value::from(x));
    let with_prefix = |ip: u128| format!("{}/{}", net.fmt(ip), net.prefix);
    Ok(match query {
        "" => s(if net.cidr {
            with_prefix(net.ip)
        } else {
            net.fmt(net.ip)
        }),
        "address" => (net.tiny() || net.ip != net.network()).then(|| Value::from(net.fmt(net.ip))),
        "host" => (net.tiny() || net.ip != net.network()).then(|| Value::from(with_prefix(net.ip))),
        "network" => s(net.fmt(net.network())),
        "prefix" => Some(Value::from(net.prefix)),
        "netmask" => s(net.fmt(net.mask())),
        "broadcast" => (!net.tiny()).then(|| Value::from(net.fmt(net.last()))),
        "subnet" | "network/prefix" | "cidr" => s(with_prefix(net.network())),
        "net" => (net.cidr && net.ip == net.network()).then(|| Value::from(with_prefix(net.ip))),
        "size" => Some(match u64::try_from(net.size()) {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(net.size().to_string()),
        }),
        "version" => Some(Value::from(if net.v6 { 6 } else { 4 })),
        q if q.parse::<i128>().is_ok() => {
            let n: i128 = q.parse().expect("checked");
            let size = net.size() as i128;
            let offset = if n < 0 { size + n } else { n };
            (offset >= 0 && offset < size && net.size() != u128::MAX)
                .then(|| Value::from(with_prefix(net.network() + offset as u128)))
        }
        q if q.contains('/') || q.parse::<IpAddr>().is_ok() => {
            let range = Net::parse(q).ok_or_else(|| invalid(format!("ipaddr: `{q}` is not a network")))?;
            range.contains(&net).then(|| v.clone())
        }
        other => {
            return Err(invalid(format!(
                "ipaddr: unknown query `{other}`; troupe knows address, host, network, prefix, netmask, broadcast, subnet (network/prefix), net, size, version, an index (`1`, `-1`) or a network to test membership (`10.0.0.0/8`)"
            )));
        }
    })
}

fn run(state: &State, v: &Value, query: Option<&str>, version: Option<u8>) -> Result<Value, Error> {
    defined(state, v)?;
    let query = query.unwrap_or("");
    match v.kind() {
        ValueKind::Seq => {
            let mut out = Vec::new();
            for item in v.try_iter()? {
                if let Some(x) = query_one(&item, query, version)? {
                    out.push(x);
                }
            }
            Ok(Value::from(out))
        }
        _ => Ok(query_one(v, query, version)?.unwrap_or(Value::from(false))),
    }
}

/// `"10.0.0.5/24" | ipaddr("network")` → `10.0.0.0`.
pub(crate) fn ipaddr(state: &State, v: &Value, query: Option<&str>) -> Result<Value, Error> {
    run(state, v, query, None)
}

/// `ipaddr` for IPv4 values only.
pub(crate) fn ipv4(state: &State, v: &Value, query: Option<&str>) -> Result<Value, Error> {
    run(state, v, query, Some(4))
}

/// `ipaddr` for IPv6 values only.
pub(crate) fn ipv6(state: &State, v: &Value, query: Option<&str>) -> Result<Value, Error> {
    run(state, v, query, Some(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_and_prefixes_parse_and_bad_ones_do_not() {
        let n = Net::parse("10.0.0.5/255.255.255.0").unwrap();
        assert_eq!((n.prefix, n.fmt(n.network())), (24, "10.0.0.0".into()));
        assert!(Net::parse("10.0.0.5/255.0.255.0").is_none());
        assert!(Net::parse("10.0.0.5/33").is_none());
        assert!(Net::parse("podc01").is_none());
        let n = Net::parse("2001:db8::5/64").unwrap();
        assert_eq!(n.fmt(n.network()), "2001:db8::");
        assert_eq!(n.fmt(n.mask()), "ffff:ffff:ffff:ffff::");
        let all = Net::parse("::/0").unwrap();
        assert_eq!((all.mask(), all.size()), (0, u128::MAX));
    }
}
