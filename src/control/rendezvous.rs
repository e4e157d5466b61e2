//! Rendezvous (highest random weight) ranking of nodes for a VIP: every node that knows the
//! same candidates computes the same order, and a node that leaves moves only the VIPs it
//! ranked first for. Used by Kubernetes planning (candidates: the eligible live members)
//! and by standalone failover (candidates: the configured boxes).

use std::net::IpAddr;

use crate::lb::maglev::hash64;

/// Seed of the rendezvous hash. Pinned: every node must use the same.
const RENDEZVOUS_SEED: u64 = 0x786c_625f_6f77_6e72;

/// The rendezvous score of `node` for `vip`.
pub fn score(node: &str, vip: IpAddr) -> u64 {
    let mut data = Vec::with_capacity(node.len() + 17);
    data.extend_from_slice(node.as_bytes());
    data.push(0);
    match vip {
        IpAddr::V4(a) => data.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => data.extend_from_slice(&a.octets()),
    }
    hash64(RENDEZVOUS_SEED, &data)
}

/// `nodes` ranked for `vip`: highest score first, then the greater name. The first is the
/// owner while it lives.
pub fn rank<'a>(vip: IpAddr, nodes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<&str> = nodes.into_iter().collect();
    v.sort_by_key(|n| std::cmp::Reverse((score(n, vip), *n)));
    v.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranking_is_pinned_and_independent_of_input_order() {
        let vip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = rank(vip, ["a", "b", "c", "d"]);
        let b = rank(vip, ["d", "c", "b", "a"]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        // The hash is pinned: a change would move every VIP of a mixed-version cluster.
        assert_eq!(score("a", vip), hash64(RENDEZVOUS_SEED, b"a\0\x0a\x00\x00\x01"));
    }

    #[test]
    fn removing_a_node_keeps_the_order_of_the_others() {
        for i in 0..50u8 {
            let vip = IpAddr::from([10, 0, 0, i]);
            let all = rank(vip, ["a", "b", "c", "d", "e"]);
            let without_c: Vec<String> = all.iter().filter(|n| *n != "c").cloned().collect();
            assert_eq!(rank(vip, ["a", "b", "d", "e"]), without_c, "vip {vip}");
        }
    }
}
