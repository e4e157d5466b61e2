//! Any bytes as a config file, through everything `xlb check` runs on one (`daemon::start::check`):
//! `k8s::manifests::load_text` (what `manifests::load` does after reading the file: the YAML
//! parse and validation, the Kubernetes objects among its documents, compile with a fresh
//! IPAM), and the datapath services with their Maglev tables. It
//! must return a result or the errors, never panic. Bytes that are not UTF-8 are skipped, as
//! `config::load` refuses them before parsing. Nothing here touches the filesystem or the
//! network: `keyFile` and `admin.socket` are paths kept as they are, never opened.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xlb::{
    control::{
        compile::compile,
        config,
        ipam::Ipam,
        nexthop::NextHops,
        services::{build_services, StatsIds},
    },
    lb::maglev::TableCache,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((_, compiled, _)) = xlb::k8s::manifests::load_text(text, &mut Ipam::default()) else { return };
    let _ = build_services(&compiled.specs, &NextHops::default(), &mut StatsIds::default(), &mut TableCache::default());
});
