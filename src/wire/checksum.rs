//! The Internet checksum (RFC 1071), its pseudo-headers, and incremental updates (RFC 1624).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to a running 32-bit ones'-complement sum (odd lengths padded with zero).
#[inline]
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that long buffers cannot overflow the accumulator.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a running sum to 16 bits and complements it: the value to store in a header.
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 significant bits, so the conversion cannot fail.
    !u16::try_from(acc).unwrap_or(u16::MAX)
}

/// Checksum of a whole buffer.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Running sum of the IPv4 pseudo-header for `protocol` and an upper-layer length.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc + u32::from(protocol) + u32::from(len)
}

/// Running sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc = sum(acc, &len.to_be_bytes());
    acc + u32::from(next_header)
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    finish(acc)
}

/// The new checksum after a run of bytes (even length, 16-bit aligned in the header)
/// changed from `old` to `new`: addresses, ports.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!check);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    finish(acc)
}

/// What changing `old` to `new` (addresses, ports: a multiple of four bytes, 16-bit
/// aligned in the header) adds to a ones'-complement sum. Computed once when the same bytes
/// are covered by two checksums (the IPv4 header's and the TCP/UDP pseudo-header's), then
/// given to [`apply`] for each. Summed in 32-bit words of native byte order: the sum does
/// not depend on the byte order or the word size once folded (RFC 1071 section 2), and it
/// saves the byte swaps of 16-bit big-endian words on the packet path.
#[inline]
pub fn delta<const N: usize>(old: &[u8; N], new: &[u8; N]) -> u64 {
    let word = |b: &[u8; N], i: usize| u64::from(u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let mut acc = 0;
    for i in (0..N / 4).map(|w| w * 4) {
        acc += (word(old, i) ^ 0xffff_ffff) + word(new, i);
    }
    acc
}

/// The checksum field `check` (as its two bytes in the header) updated by a [`delta`]
/// (RFC 1624 eqn. 3), as the two bytes to store.
#[inline]
#[allow(clippy::cast_possible_truncation)] // folded to 16 bits first
pub fn apply(check: [u8; 2], delta: u64) -> [u8; 2] {
    let mut acc = u64::from(!u16::from_ne_bytes(check)) + delta;
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    (!(acc as u16)).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: the sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
    }

    #[test]
    fn delta_then_apply_is_update_bytes() {
        let (old, new) = ([10, 0, 0, 1, 0x1f, 0x90, 0, 80], [192, 168, 7, 9, 0xff, 0xfe, 0xff, 0xff]);
        for check in [0u16, 1, 0x1234, 0xfffe, 0xffff] {
            let got = u16::from_be_bytes(apply(check.to_be_bytes(), delta(&old, &new)));
            assert_eq!(got, update_bytes(check, &old, &new), "check {check:#x}");
        }
    }

    #[test]
    fn delta_in_native_words_matches_big_endian_halves() {
        // Random addresses and ports of both families, against the 16-bit big-endian way.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let mut old = [0u8; 36];
            let mut new = [0u8; 36];
            for b in old.iter_mut().chain(new.iter_mut()) {
                *b = next().to_le_bytes()[0];
            }
            let check = u16::try_from(next() & 0xffff).unwrap();
            let got = apply(check.to_be_bytes(), delta(&old, &new));
            assert_eq!(u16::from_be_bytes(got), update_bytes(check, &old, &new), "{old:?} -> {new:?}, {check:#x}");
            let (o4, n4): (&[u8; 8], &[u8; 8]) = (old[..8].try_into().unwrap(), new[..8].try_into().unwrap());
            let got = apply(check.to_be_bytes(), delta(o4, n4));
            assert_eq!(u16::from_be_bytes(got), update_bytes(check, o4, n4));
        }
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data = [0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let before = checksum(&data);
        let old = [data[16], data[17], data[18], data[19]];
        let new = [192, 168, 7, 9];
        data[16..20].copy_from_slice(&new);
        assert_eq!(update_bytes(before, &old, &new), checksum(&data));
        let old_ttl = u16::from_be_bytes([data[8], data[9]]);
        data[8] -= 1;
        let new_ttl = u16::from_be_bytes([data[8], data[9]]);
        assert_eq!(update_u16(update_bytes(before, &old, &new), old_ttl, new_ttl), checksum(&data));
    }
}
