//! Embeds the eBPF object when one was built: `cargo xtask build` passes its path in
//! INGRESS_EBPF_OBJECT; without it, the object at the place `cargo xtask build` puts
//! it is used if present. Otherwise the agent runs only `--dataplane userspace` and
//! says how to get eBPF.
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(ebpf_object)");
    println!("cargo:rerun-if-env-changed=INGRESS_EBPF_OBJECT");
    let default =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/bpfel-unknown-none/release/ingress-ebpf");
    let path = match std::env::var_os("INGRESS_EBPF_OBJECT").map(PathBuf::from) {
        Some(p) => p,
        None if default.is_file() => default,
        None => return,
    };
    if !path.is_file() {
        panic!("INGRESS_EBPF_OBJECT={} is not a file; run `cargo xtask build`", path.display());
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-cfg=ebpf_object");
    println!("cargo:rustc-env=INGRESS_EBPF_OBJECT_PATH={}", path.display());
}
