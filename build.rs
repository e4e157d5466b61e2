//! Compiles the XDP program in `bpf/` into a libbpf-rs skeleton in OUT_DIR. Nothing else.

use std::{env, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let src = "bpf/xlb.bpf.c";
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("xlb.skel.rs");
    // Debian keeps asm/types.h under the multiarch directory, which clang -target bpf does
    // not search by itself.
    let multiarch =
        format!("-I/usr/include/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into()));
    if let Err(err) = SkeletonBuilder::new()
        .source(src)
        .clang_args(["-O2", "-g", "-Wall", "-Ibpf", multiarch.as_str()])
        .build_and_generate(&out)
    {
        panic!("building {src} failed: {err:#}\n(is clang installed? run `scripts/setup.sh`)");
    }
    println!("cargo:rerun-if-changed=bpf");
}
