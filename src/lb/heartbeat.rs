//! Heartbeats between xlb nodes on the announce interface: one broadcast Ethernet frame of
//! EtherType 0x88B5 (IEEE 802 local experimental) per node per interval, sent and received
//! by the AF_XDP workers like the ARP they protect.
//!
//! Payload, after the Ethernet header (big-endian):
//!
//! ```text
//!  0  magic "XLBH"        4
//!  4  version (1)         1
//!  5  flags               1   bit 0: leaving (hand my VIPs over now); bit 1: quorum
//!  6  name length N       1   1..=64
//!  7  signed              1   1: an HMAC-SHA256 tag follows the name
//!  8  cluster             4   hash of the cluster name: two clusters on one LAN ignore each other
//! 12  incarnation         8   a restart is a new incarnation
//! 20  sequence            8
//! 28  members digest      8   hash of the sender's member list (sorted names)
//! 36  hears               8   bit i: the sender hears member i of that list (up to 64)
//! 44  node name           N
//! 44+N tag                32  (signed only) HMAC-SHA256 over the frame from the source MAC
//!                             to the end of the name, with the cluster's shared key
//! ```
//!
//! With a key configured, a node sends signed heartbeats and takes in only those whose tag
//! verifies: a host on the LAN cannot forge a peer's "leaving" or quorum (replays are
//! stopped by the incarnation and sequence checks).

use super::out::{OutFrame, OUT_FRAME_CAP};
use crate::wire::{EthernetAddress, EthernetFrame};

/// The heartbeat EtherType.
pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"XLBH";
const VERSION: u8 = 1;
/// Longest node name carried (Kubernetes node names longer than this are cut: the receiver
/// matches on the full name only up to here).
pub const MAX_NAME: usize = 64;
const HEADER: usize = 44;
/// Flag: the sender is leaving; its VIPs move at once.
pub const FLAG_LEAVING: u8 = 1;
/// Flag: the sender has quorum and may own VIPs.
pub const FLAG_QUORUM: u8 = 2;
const TAG: usize = 32;

/// The cluster's shared secret that signs heartbeats.
pub struct Key(ring::hmac::Key);

impl Key {
    /// A key from the secret's bytes (at least 16).
    pub fn new(secret: &[u8]) -> Self {
        Key(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// Reads the secret from a file (surrounding whitespace, e.g. a final newline, is not
    /// part of it); the error says what is wrong.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let secret = raw.trim_ascii();
        if secret.len() < 16 {
            return Err(format!(
                "{}: the key has {} bytes; give at least 16 (e.g. `head -c 32 /dev/urandom | base64 > FILE`), the same on every node",
                path.display(),
                secret.len()
            ));
        }
        Ok(Key::new(secret))
    }
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A heartbeat as received: small and `Copy`, so that workers pass it on without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's MAC (from the Ethernet header).
    pub mac: EthernetAddress,
    /// Flags ([`FLAG_LEAVING`]).
    pub flags: u8,
    /// Cluster hash.
    pub cluster: u32,
    /// Sender's incarnation.
    pub incarnation: u64,
    /// Sender's sequence number.
    pub seq: u64,
    /// Hash of the sender's member list.
    pub digest: u64,
    /// Which members (by index in the sorted list) the sender hears.
    pub hears: u64,
    name: [u8; MAX_NAME],
    name_len: u8,
}

impl core::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Heartbeat({} #{} from {})", self.name(), self.seq, self.mac)
    }
}

impl Heartbeat {
    /// The sender's node name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or("")
    }

    /// Whether the sender says it is leaving.
    pub fn leaving(&self) -> bool {
        self.flags & FLAG_LEAVING != 0
    }
}

/// What to put in a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    /// Sender's node name.
    pub name: &'a str,
    /// Cluster hash.
    pub cluster: u32,
    /// Incarnation.
    pub incarnation: u64,
    /// Sequence number.
    pub seq: u64,
    /// Hash of the sender's member list.
    pub digest: u64,
    /// Which members the sender hears.
    pub hears: u64,
    /// Flags.
    pub flags: u8,
}

/// The longest prefix of `name` of at most [`MAX_NAME`] bytes that ends on a char boundary:
/// what a heartbeat carries of it.
pub fn cut_name(name: &str) -> &str {
    let mut n = name.len().min(MAX_NAME);
    while !name.is_char_boundary(n) {
        n -= 1;
    }
    &name[..n]
}

/// Builds the broadcast heartbeat frame sent from `mac`, unsigned.
pub fn build(mac: EthernetAddress, b: &Beat<'_>) -> OutFrame {
    build_signed(mac, b, None)
}

/// Builds the broadcast heartbeat frame sent from `mac`, signed with `key` if given.
pub fn build_signed(mac: EthernetAddress, b: &Beat<'_>, key: Option<&Key>) -> OutFrame {
    let name = cut_name(b.name).as_bytes();
    let mut buf = [0u8; OUT_FRAME_CAP];
    buf[0..6].copy_from_slice(&EthernetAddress::BROADCAST.0);
    buf[6..12].copy_from_slice(&mac.0);
    buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let p = &mut buf[14..];
    p[0..4].copy_from_slice(MAGIC);
    p[4] = VERSION;
    p[5] = b.flags;
    p[6] = u8::try_from(name.len()).unwrap_or(0);
    p[8..12].copy_from_slice(&b.cluster.to_be_bytes());
    p[12..20].copy_from_slice(&b.incarnation.to_be_bytes());
    p[20..28].copy_from_slice(&b.seq.to_be_bytes());
    p[28..36].copy_from_slice(&b.digest.to_be_bytes());
    p[36..44].copy_from_slice(&b.hears.to_be_bytes());
    p[HEADER..HEADER + name.len()].copy_from_slice(name);
    let mut end = 14 + HEADER + name.len();
    if let Some(k) = key {
        buf[14 + 7] = 1;
        let tag = ring::hmac::sign(&k.0, &buf[6..end]);
        buf[end..end + TAG].copy_from_slice(tag.as_ref());
        end += TAG;
    }
    // At least the Ethernet minimum (60 bytes without the FCS).
    OutFrame::from_parts(buf, end.max(60))
}

/// Reads a heartbeat frame, taking it only if signed with `key` (when one is given): `None`
/// for a forged, unsigned or malformed one.
pub fn accept(frame: &[u8], key: Option<&Key>) -> Option<Heartbeat> {
    let h = parse(frame)?;
    if let Some(k) = key {
        let end = 14 + HEADER + usize::from(h.name_len);
        let tag = frame.get(end..end + TAG)?;
        if frame.get(14 + 7) != Some(&1) || ring::hmac::verify(&k.0, &frame[6..end], tag).is_err() {
            return None;
        }
    }
    Some(h)
}

/// Reads a heartbeat frame (a tag, if any, is not checked: see [`accept`]); `None` for
/// anything that is not a well-formed one of ours.
pub fn parse(frame: &[u8]) -> Option<Heartbeat> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != ETHERTYPE {
        return None;
    }
    let mac = eth.src_addr();
    let p = eth.payload();
    if p.len() < HEADER || &p[0..4] != MAGIC || p[4] != VERSION {
        return None;
    }
    let n = usize::from(p[6]);
    if n == 0 || n > MAX_NAME || p.len() < HEADER + n {
        return None;
    }
    let raw = &p[HEADER..HEADER + n];
    core::str::from_utf8(raw).ok()?;
    let mut name = [0u8; MAX_NAME];
    name[..n].copy_from_slice(raw);
    let u64_at = |i: usize| p.get(i..i + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes);
    Some(Heartbeat {
        mac,
        flags: p[5],
        cluster: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        incarnation: u64_at(12)?,
        seq: u64_at(20)?,
        digest: u64_at(28)?,
        hears: u64_at(36)?,
        name,
        name_len: u8::try_from(n).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);

    #[test]
    fn round_trip_and_refusals() {
        let b = Beat {
            name: "node-a",
            cluster: 7,
            incarnation: 42,
            seq: 9,
            digest: 0xdead_beef,
            hears: 0b101,
            flags: FLAG_LEAVING,
        };
        let f = build(MAC, &b);
        assert_eq!(f.bytes().len(), 64, "header and name");
        assert_eq!(build(MAC, &Beat { name: "a", ..b }).bytes().len(), 60, "padded to the Ethernet minimum");
        assert_eq!(&f.bytes()[0..6], &[0xff; 6], "broadcast");
        let h = parse(f.bytes()).unwrap();
        assert_eq!(
            (h.name(), h.cluster, h.incarnation, h.seq, h.digest, h.mac),
            ("node-a", 7, 42, 9, 0xdead_beef, MAC)
        );
        assert_eq!(h.hears, 0b101);
        assert!(h.leaving());
        // A long name is cut on a char boundary.
        let long = "é".repeat(40);
        let h = parse(build(MAC, &Beat { name: &long, ..b }).bytes()).unwrap();
        assert_eq!(h.name(), "é".repeat(32));
        // Anything else: refused.
        let good = f.bytes().to_vec();
        for (at, v) in [(14, b'Y'), (18, 2), (20, 0), (20, 200)] {
            let mut bad = good.clone();
            bad[at] = v;
            assert!(parse(&bad).is_none(), "byte {at} = {v}");
        }
        let mut other = good.clone();
        other[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert!(parse(&other).is_none());
        assert!(parse(&good[..40]).is_none());
        let mut bad_utf8 = good;
        bad_utf8[14 + HEADER] = 0xff;
        assert!(parse(&bad_utf8).is_none());
    }

    #[test]
    fn signed_heartbeats_are_taken_only_with_the_right_key() {
        let b = Beat { name: "node-a", cluster: 7, incarnation: 1, seq: 1, digest: 0, hears: 0, flags: 0 };
        let (key, other) = (Key::new(b"sixteen byte key!"), Key::new(b"another 16 b key"));
        let signed = build_signed(MAC, &Beat { name: &"n".repeat(MAX_NAME), ..b }, Some(&key));
        assert_eq!(signed.bytes().len(), 14 + HEADER + MAX_NAME + TAG, "fits an OutFrame");
        let f = build_signed(MAC, &b, Some(&key));
        assert_eq!(accept(f.bytes(), Some(&key)).map(|h| h.seq), Some(1));
        assert!(accept(f.bytes(), Some(&other)).is_none(), "another key");
        assert!(accept(build(MAC, &b).bytes(), Some(&key)).is_none(), "unsigned");
        assert!(accept(f.bytes(), None).is_some(), "no key: tags are not checked");
        // Any change to what is signed (flags, sender MAC, name) breaks the tag.
        for at in [6, 14 + 5, 14 + 20, 14 + HEADER] {
            let mut bad = f.bytes().to_vec();
            bad[at] ^= 1;
            assert!(accept(&bad, Some(&key)).is_none(), "byte {at} changed");
        }
        assert!(accept(&f.bytes()[..f.bytes().len() - 1], Some(&key)).is_none(), "tag cut short");
    }
}
