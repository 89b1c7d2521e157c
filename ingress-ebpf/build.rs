//! Re-run the eBPF build when the shared ABI crate changes.
fn main() {
    println!("cargo:rerun-if-changed=../ingress-common/src");
}
