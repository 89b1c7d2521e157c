//! Embeds the eBPF object when one was built: `cargo xtask build` passes its path in
//! INGRESS_EBPF_OBJECT; a plain `cargo build` without it builds an agent that runs
//! only `--dataplane userspace` and says how to get eBPF.
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(ebpf_object)");
    println!("cargo:rerun-if-env-changed=INGRESS_EBPF_OBJECT");
    let Some(path) = std::env::var_os("INGRESS_EBPF_OBJECT").map(PathBuf::from) else {
        return;
    };
    if !path.is_file() {
        panic!("INGRESS_EBPF_OBJECT={} is not a file; run `cargo xtask build`", path.display());
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-cfg=ebpf_object");
    println!("cargo:rustc-env=INGRESS_EBPF_OBJECT_PATH={}", path.display());
}
