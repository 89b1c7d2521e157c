//! The ingress agent as a library: the binary (`main.rs`) is a thin CLI over these
//! modules, and the root-only test crate drives the same code.
//!
//! Pure parts (no I/O, no async): [`config`], [`resources`], [`routing`], [`stats`].
//! Edges: [`sources`] (manifest files, Kubernetes), [`proxy`] (sockets), [`admin`],
//! [`ebpf`] (kernel).

pub mod admin;
pub mod config;
pub mod ebpf;
pub mod metrics;
pub mod proxy;
pub mod resources;
pub mod routing;
pub mod sources;
pub mod splice;
pub mod stats;

// routing/tests.rs (being restructured on another branch) still names
// `crate::manifest`; drop this alias once it uses `crate::sources::manifest`.
#[cfg(test)]
use sources::manifest;
