//! The snapshot's lookup tables for the packet path: which service a (VIP, protocol, port)
//! is, and how a VIP is treated. Built once per snapshot off the hot path, read per packet.
//!
//! Open addressing with linear probing over a power-of-two array at most half full, keyed by
//! an address in the 16-byte form flow keys use and a 32-bit tag (port and protocol; 0 for
//! an address alone). The slot is picked by one multiply of the folded key (Fibonacci
//! hashing): keys are our own VIPs, chosen by the operator, not by whoever sends packets,
//! so a keyed hash such as std's SipHash buys nothing here and cost a third of a packet.

/// A key: an address (16-byte form) and a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    lo: u64,
    hi: u64,
    tag: u32,
}

impl Key {
    /// The key of `addr` (16-byte form) with `tag`.
    #[inline]
    pub(crate) fn new(addr: &[u8; 16], tag: u32) -> Self {
        // Two eight-byte loads (one u128 from bytes was assembled byte by byte where this
        // was not inlined).
        let half = |b: &[u8]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        Key { lo: half(&addr[..8]), hi: half(&addr[8..]), tag }
    }

    /// The key of a service: VIP, port and protocol.
    #[inline]
    pub(crate) fn service(vip: &[u8; 16], port: u16, proto: u8) -> Self {
        Key::new(vip, u32::from(port) << 8 | u32::from(proto))
    }

    #[inline]
    fn fold(&self) -> u64 {
        // An IPv4-mapped address lives in the upper half (bytes 8..16) and the tag in the low
        // 24 bits, so they never overlap.
        self.lo.rotate_left(17) ^ self.hi ^ u64::from(self.tag)
    }
}

/// Marks a free slot.
const FREE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Key,
    value: u32,
}

/// A map from [`Key`] to a `u32` below `u32::MAX`.
#[derive(Debug, Clone)]
pub(crate) struct FlatIndex {
    slots: Box<[Slot]>,
    shift: u32,
}

impl Default for FlatIndex {
    fn default() -> Self {
        FlatIndex::build(std::iter::empty())
    }
}

impl FlatIndex {
    /// The index of `entries`; of two equal keys the later wins.
    pub(crate) fn build(entries: impl IntoIterator<Item = (Key, u32)>) -> Self {
        let entries: Vec<(Key, u32)> = entries.into_iter().collect();
        // At most half full, at least 8 slots.
        let len = (entries.len() * 2).max(8).next_power_of_two();
        let free = Slot { key: Key { lo: 0, hi: 0, tag: 0 }, value: FREE };
        let mut index = FlatIndex { slots: vec![free; len].into_boxed_slice(), shift: 64 - len.trailing_zeros() };
        for (key, value) in entries {
            debug_assert!(value != FREE, "u32::MAX marks a free slot");
            let mask = index.slots.len() - 1;
            let mut i = index.home(&key);
            loop {
                let s = &mut index.slots[i];
                if s.value == FREE || s.key == key {
                    *s = Slot { key, value };
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        index
    }

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // below the slot count, which is a usize
    fn home(&self, key: &Key) -> usize {
        // The top bits of the product: every bit of the key reaches them.
        (key.fold().wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &Key) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        // The table is at most half full, so a free slot ends every probe sequence.
        loop {
            let s = self.slots.get(i)?;
            if s.value == FREE {
                return None;
            }
            if s.key == *key {
                return Some(s.value);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    #[test]
    fn finds_every_key_and_nothing_else() {
        // Many services on few VIPs, v4 and v6: the keys differ only in the tag or the address.
        let mut entries = Vec::new();
        for vip in 0..40u8 {
            let a = if vip % 2 == 0 {
                v4([10, 0, 0, vip])
            } else {
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, vip]
            };
            for port in [80u16, 443, 8080] {
                for proto in [6u8, 17] {
                    entries.push((Key::service(&a, port, proto), u32::try_from(entries.len()).unwrap()));
                }
            }
        }
        let index = FlatIndex::build(entries.clone());
        for (k, v) in &entries {
            assert_eq!(index.get(k), Some(*v));
        }
        assert_eq!(index.get(&Key::service(&v4([10, 0, 0, 0]), 81, 6)), None, "other port");
        assert_eq!(index.get(&Key::service(&v4([10, 0, 0, 0]), 80, 1)), None, "other protocol");
        assert_eq!(index.get(&Key::service(&v4([10, 0, 0, 41]), 80, 6)), None, "other address");
        assert_eq!(index.get(&Key::new(&v4([10, 0, 0, 0]), 0)), None, "the address alone");
    }

    #[test]
    fn empty_and_replaced() {
        let index = FlatIndex::default();
        assert_eq!(index.get(&Key::new(&v4([10, 0, 0, 1]), 0)), None);
        let k = Key::new(&v4([10, 0, 0, 1]), 0);
        let index = FlatIndex::build([(k, 1), (k, 2)]);
        assert_eq!(index.get(&k), Some(2), "the later of two equal keys wins");
    }
}
