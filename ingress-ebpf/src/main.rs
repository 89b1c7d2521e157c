//! Kernel programs of the ingress. One program per module; packet parsing shared in
//! [`parse`]. Built for `bpfel-unknown-none` by `cargo xtask build`.
#![no_std]
#![no_main]

mod parse;
mod splice;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program whose code can reach a real panic; this is
    // never executed.
    loop {}
}

/// Program license: GPL is required for the helpers aya-log uses (bpf_ringbuf_*
/// are GPL-only).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
