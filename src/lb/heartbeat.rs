//! Heartbeats between xlb nodes on the announce interface: one broadcast Ethernet frame of
//! EtherType 0x88B5 (IEEE 802 local experimental) per node per interval, sent and received
//! by the AF_XDP workers like the ARP they protect.
//!
//! The frame's layout is [`crate::wire::heartbeat`]'s; this module says what it means: the
//! flags ([`FLAG_LEAVING`], [`FLAG_QUORUM`], [`FLAG_HANDOVER`]), the cluster hash (two clusters on one LAN
//! ignore each other), the incarnation (a restart is a new one), the members digest and
//! hears bitmap, and the tag: HMAC-SHA256 over the frame from the source MAC to the end of
//! the name, with the cluster's shared key.
//!
//! With a key configured, a node sends signed heartbeats and takes in only those whose tag
//! verifies: a host on the LAN cannot forge a peer's "leaving" or quorum (replays are
//! stopped by the incarnation and sequence checks).

use super::out::{OutFrame, OUT_FRAME_CAP};
/// The heartbeat EtherType, and the longest node name carried (Kubernetes node names longer
/// than this are cut: the receiver matches on the full name only up to here).
pub use crate::wire::heartbeat::{ETHERTYPE, MAX_NAME};
#[cfg(test)]
use crate::wire::heartbeat::{HEADER_LEN as HEADER, TAG_LEN as TAG};
use crate::wire::{
    build::MIN_FRAME_LEN,
    ethernet::EthernetRepr,
    heartbeat::{HeartbeatPacket, Repr},
    EthernetAddress, EthernetFrame,
};

/// Flag: the sender is leaving; its VIPs move at once.
pub const FLAG_LEAVING: u8 = 1;
/// Flag: the sender has quorum and may own VIPs.
pub const FLAG_QUORUM: u8 = 2;
/// Flag: the sender hands over to a new xlb on the same node (an upgrade): its peers count
/// it alive, as it last was, for [`HANDOVER_HOLD`] or until the new one beats. Older
/// receivers ignore the bit, and see a short silence.
pub const FLAG_HANDOVER: u8 = 4;
/// How long a node that hands over is held alive by its peers: enough for the successor
/// to attach, read its services and beat; past it (the successor failed), its VIPs move.
pub const HANDOVER_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

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

    /// Whether the sender says it hands over to a new xlb on its node.
    pub fn handing_over(&self) -> bool {
        self.flags & FLAG_HANDOVER != 0
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
    let mut buf = [0u8; OUT_FRAME_CAP];
    let eth = EthernetRepr { src: mac, dst: EthernetAddress::BROADCAST, vlan_tci: None, ethertype: ETHERTYPE };
    let repr = Repr {
        flags: b.flags,
        signed: key.is_some(),
        cluster: b.cluster,
        incarnation: b.incarnation,
        seq: b.seq,
        digest: b.digest,
        hears: b.hears,
        name: cut_name(b.name),
    };
    // The buffer holds an Ethernet header, the longest name and a tag: neither can fail.
    let at = eth.emit(&mut buf).unwrap_or(0);
    let mut end = at + buf.get_mut(at..).map_or(0, |p| repr.emit(p).unwrap_or(0));
    if let Some(k) = key {
        let tag = ring::hmac::sign(&k.0, &buf[6..end]);
        if let Some(t) = buf.get_mut(end..end + tag.as_ref().len()) {
            t.copy_from_slice(tag.as_ref());
            end += t.len();
        }
    }
    // At least the Ethernet minimum (60 bytes without the FCS).
    OutFrame::from_parts(buf, end.max(MIN_FRAME_LEN))
}

/// Reads a heartbeat frame, taking it only if signed with `key` (when one is given): `None`
/// for a forged, unsigned or malformed one.
pub fn accept(frame: &[u8], key: Option<&Key>) -> Option<Heartbeat> {
    let h = parse(frame)?;
    if let Some(k) = key {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let p = HeartbeatPacket::new_checked(eth.payload()).ok()?;
        let end = eth.header_len() + p.signed_len();
        if !p.signed() || ring::hmac::verify(&k.0, frame.get(6..end)?, p.tag()?).is_err() {
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
    let p = HeartbeatPacket::new_checked(eth.payload()).ok()?;
    let r = Repr::parse(&p).ok()?;
    let mut name = [0u8; MAX_NAME];
    name.get_mut(..r.name.len())?.copy_from_slice(r.name.as_bytes());
    Some(Heartbeat {
        mac: eth.src_addr(),
        flags: r.flags,
        cluster: r.cluster,
        incarnation: r.incarnation,
        seq: r.seq,
        digest: r.digest,
        hears: r.hears,
        name,
        name_len: u8::try_from(r.name.len()).ok()?,
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
