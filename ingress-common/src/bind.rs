//! Keys and values of delayed binding's maps (the `BIND_*` names in [`crate::maps`]):
//! bindable hosts -> backend, backend -> endpoints, and the head scanner's verdicts
//! (counters per verdict code, the last verdict, the scanner's scratch space). The host
//! key is [`crate::head::BindHostKey`].

use core::mem::size_of;

use crate::head::{BindHostKey, HeadScanner};

/// Endpoints of one backend at most; a backend with more is not bindable.
pub const BIND_MAX_ENDPOINTS: usize = 16;

/// Value of the bindable hosts' map: the backend every request of the host goes to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindTarget {
    /// Key in the backends' map.
    pub backend: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BindTarget>() == 8);

/// A pod of a bindable backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindEndpoint {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Host byte order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<BindEndpoint>() == 8);

/// Value of the backends' map: the backend's endpoints (the first `count`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindBackend {
    pub count: u32,
    pub _pad: u32,
    pub endpoints: [BindEndpoint; BIND_MAX_ENDPOINTS],
}
const _: () = assert!(size_of::<BindBackend>() == 8 + 8 * BIND_MAX_ENDPOINTS);

/// What the scanner program decided for the last segment it read (an array of one, for
/// tests and debugging): a verdict code (0: bind, else [`crate::head::Fallback`]), the
/// backend when it binds, the host key it read (len 0 when it read none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindScanResult {
    pub verdict: u32,
    pub backend: u32,
    pub key: BindHostKey,
    /// Segments scanned by the program so far (to tell a new result from an old one).
    pub runs: u32,
}
const _: () = assert!(size_of::<BindScanResult>() == 12 + size_of::<BindHostKey>());

/// Bytes of the first segment the program copies to scan ([`crate::head::SCAN_MAX`] fit).
pub const BIND_SCRATCH_BYTES: usize = 2048;
const _: () = assert!(BIND_SCRATCH_BYTES >= crate::head::SCAN_MAX && BIND_SCRATCH_BYTES.is_power_of_two());

/// The scanner program's per-CPU scratch space: the segment's bytes and the scanner.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BindScratch {
    pub bytes: [u8; BIND_SCRATCH_BYTES],
    pub scanner: HeadScanner,
    /// The step that ended the scan (0xff: none yet).
    pub step: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BindScratch>() == BIND_SCRATCH_BYTES + size_of::<HeadScanner>() + 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), Copy, no padding (size checks above).
    unsafe impl aya::Pod for crate::head::BindHostKey {}
    unsafe impl aya::Pod for super::BindTarget {}
    unsafe impl aya::Pod for super::BindBackend {}
    unsafe impl aya::Pod for super::BindScanResult {}
}
