//! The config file's shape, as serde reads it: every section and field with the names the
//! YAML uses. Nothing here checks values; `validate` turns it into the desired state.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct File {
    pub(super) interfaces: Vec<InterfaceFile>,
    #[serde(default)]
    pub(super) pools: Vec<PoolFile>,
    #[serde(default)]
    pub(super) snat: Option<SnatFile>,
    #[serde(default)]
    pub(super) services: Vec<ServiceFile>,
    #[serde(default)]
    pub(super) announce: AnnounceFile,
    #[serde(default)]
    pub(super) conntrack: ConntrackFile,
    #[serde(default)]
    pub(super) admin: AdminFile,
    #[serde(default)]
    pub(super) metrics: Option<MetricsFile>,
    #[serde(default)]
    pub(super) ha: Option<HaFile>,
    #[serde(default)]
    pub(super) node_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(super) bgp: Option<BgpFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct BgpFile {
    #[serde(rename = "localASN")]
    pub(super) local_asn: u32,
    #[serde(rename = "routerID")]
    pub(super) router_id: Option<String>,
    #[serde(default)]
    pub(super) listen: bool,
    #[serde(default)]
    pub(super) peers: Vec<BgpPeerFile>,
    #[serde(default)]
    pub(super) bfd_profiles: Vec<BfdProfileFile>,
    #[serde(default)]
    pub(super) advertisements: Vec<BgpAdvertisementFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct BgpPeerFile {
    pub(crate) peer_address: String,
    #[serde(rename = "peerASN")]
    pub(crate) peer_asn: u32,
    pub(crate) peer_port: Option<u32>,
    pub(crate) hold_time_seconds: Option<u32>,
    pub(crate) keep_alive_time_seconds: Option<u32>,
    pub(crate) connect_retry_time_seconds: Option<u32>,
    #[serde(rename = "eBGPMultihopTTL")]
    pub(crate) ebgp_multihop_ttl: Option<u32>,
    pub(crate) source_address: Option<String>,
    pub(crate) bfd_profile: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) graceful_restart: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct BfdProfileFile {
    pub(crate) name: String,
    pub(crate) receive_interval: Option<u32>,
    pub(crate) transmit_interval: Option<u32>,
    pub(crate) detect_multiplier: Option<u32>,
    #[serde(default)]
    pub(crate) passive_mode: bool,
    pub(crate) minimum_ttl: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct BgpAdvertisementFile {
    #[serde(default)]
    pub(super) pools: Vec<String>,
    #[serde(default)]
    pub(super) services: Vec<String>,
    #[serde(default)]
    pub(super) communities: Vec<String>,
    pub(super) local_pref: Option<u32>,
    #[serde(default)]
    pub(super) l2: bool,
    #[serde(default)]
    pub(super) peers: Vec<String>,
    pub(super) aggregation_length: Option<u32>,
    #[serde(rename = "aggregationLengthV6")]
    pub(super) aggregation_length_v6: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct HaFile {
    pub(super) node: Option<String>,
    pub(super) peers: Vec<String>,
    pub(super) cluster: Option<String>,
    pub(super) heartbeat_interval_ms: Option<u64>,
    pub(super) dead_after: Option<u32>,
    pub(super) takeover_ms: Option<u64>,
    pub(super) gratuitous_arp_ms: Option<Vec<u64>>,
    pub(super) refresh_seconds: Option<u64>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct InterfaceFile {
    pub(super) name: String,
    pub(super) queues: Option<u32>,
    #[serde(default)]
    pub(super) xdp_mode: Option<String>,
    #[serde(default)]
    pub(super) zero_copy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PoolFile {
    pub(super) name: String,
    pub(super) blocks: Vec<BlockFile>,
    #[serde(default, rename = "allowFirstLastIPs")]
    pub(super) allow_first_last_ips: bool,
    #[serde(default)]
    pub(super) disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockFile {
    pub(super) cidr: Option<String>,
    pub(super) start: Option<String>,
    pub(super) stop: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnatFile {
    pub(super) addresses: Vec<String>,
    #[serde(default)]
    pub(super) ports: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ServiceFile {
    pub(super) name: String,
    pub(super) vip: Option<String>,
    pub(super) pool: Option<String>,
    pub(super) ip_family: Option<String>,
    #[serde(default)]
    pub(super) mode: Option<String>,
    pub(super) ports: Vec<PortFile>,
    #[serde(default)]
    pub(super) backends: Vec<BackendFile>,
    pub(super) maglev_table_size: Option<u32>,
    pub(super) session_affinity: Option<String>,
    pub(super) session_affinity_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub(super) source_ranges: Vec<String>,
    pub(super) health_check: Option<HealthFile>,
    #[serde(default)]
    pub(super) interfaces: Vec<String>,
    #[serde(default)]
    pub(super) labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PortFile {
    pub(super) port: u32,
    #[serde(default)]
    pub(super) protocol: Option<String>,
    pub(super) target_port: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendFile {
    pub(super) address: String,
    #[serde(default)]
    pub(super) weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct HealthFile {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) port: Option<u32>,
    pub(super) path: Option<String>,
    pub(super) expect_status: Option<u16>,
    pub(super) interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AnnounceFile {
    pub(super) dad_probes: Option<u32>,
    pub(super) dad_interval_ms: Option<u64>,
    pub(super) dad_wait_ms: Option<u64>,
    pub(super) garp_count: Option<u32>,
    pub(super) garp_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConntrackFile {
    pub(super) capacity: Option<usize>,
    /// Seconds, by timeout name (`tcpSyn`, `tcpSynSnat`, ...): checked by name in validate.
    #[serde(default)]
    pub(super) timeouts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub(super) socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    pub(super) listen: String,
}
