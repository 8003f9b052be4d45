//! Where a request came from: the TCP peer, or, behind a load balancer, the client address the
//! load balancer itself wrote into `X-Forwarded-For`. Anything to the left of what it wrote is
//! the client's own to choose, so it is never read: a forged header moves no one to another
//! source address.
//!
//! The TCP peer is on every request the serve loop hands on, as axum's `ConnectInfo`.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;

/// The source address of a request from `peer` with `headers`. With `trusted_entries` 0 it is
/// the peer's. Otherwise it is the leftmost of the `trusted_entries` entries at the right end of
/// `X-Forwarded-For` (several header lines read as one list, in order): Google's external
/// Application Load Balancer appends `CLIENT, LOAD_BALANCER` to whatever the client sent, so
/// there it is 2. A header shorter than that, or an entry that is no address, did not come
/// through the load balancer as configured: the peer's address stands, which on Cloud Run is
/// Google's front end, never in a source range a check allows.
pub fn source_address(headers: &HeaderMap, peer: IpAddr, trusted_entries: usize) -> IpAddr {
    if trusted_entries == 0 {
        return peer.to_canonical();
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted_entries)
        .and_then(|index| entries[index].parse::<IpAddr>().ok())
        .unwrap_or(peer)
        .to_canonical()
}

/// What one client holds: an IPv4 address, or the /64 an IPv6 address is in (a host is given a
/// whole /64, so counting single IPv6 addresses would let one client pass as billions).
pub fn network_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    const PEER: &str = "169.254.1.1";

    fn source(values: &[&str], trusted: usize) -> String {
        source_address(&forwarded(values), PEER.parse().unwrap(), trusted).to_string()
    }

    #[test]
    fn without_a_trusted_load_balancer_the_header_is_not_read() {
        assert_eq!(source(&["203.0.113.9"], 0), PEER);
        assert_eq!(source(&[], 0), PEER);
    }

    #[test]
    fn behind_the_load_balancer_the_client_is_the_entry_it_wrote() {
        assert_eq!(source(&["203.0.113.9, 34.1.2.3"], 2), "203.0.113.9");
        // What the client sent itself is to the left, whatever it says.
        assert_eq!(
            source(&["140.82.112.1, 10.0.0.1, 203.0.113.9, 34.1.2.3"], 2),
            "203.0.113.9"
        );
        // Header lines are one list, in order.
        assert_eq!(
            source(&["140.82.112.1", "203.0.113.9, 34.1.2.3"], 2),
            "203.0.113.9"
        );
        assert_eq!(source(&["2001:db8::7 , 34.1.2.3"], 2), "2001:db8::7");
    }

    #[test]
    fn a_header_the_load_balancer_did_not_write_leaves_the_peer() {
        assert_eq!(source(&["203.0.113.9"], 2), PEER);
        assert_eq!(source(&[], 2), PEER);
        assert_eq!(source(&["not-an-address, 34.1.2.3"], 2), PEER);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_a_mapped_ipv4_is_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(network_of(one), network_of(other));
        assert_ne!(
            network_of(one),
            network_of("2001:db8:1:3::1".parse().unwrap())
        );
        let mapped: IpAddr = "::ffff:140.82.112.5".parse().unwrap();
        assert_eq!(network_of(mapped).to_string(), "140.82.112.5");
        assert_eq!(
            source_address(&HeaderMap::new(), mapped, 0).to_string(),
            "140.82.112.5"
        );
    }
}
