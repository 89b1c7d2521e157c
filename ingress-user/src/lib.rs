//! The ingress agent as a library: the binary (`main.rs`) is a thin CLI over these
//! modules, and the root-only test crate drives the same code.
//!
//! Pure parts (no I/O, no async): [`config`], [`resources`], [`routing`], [`stats`].
//! Edges: [`manifest`] (files), [`proxy`] (sockets), [`admin`], [`ebpf`] (kernel).

pub mod admin;
pub mod config;
pub mod ebpf;
pub mod k8s;
pub mod manifest;
pub mod metrics;
pub mod proxy;
pub mod resources;
pub mod routing;
pub mod source;
pub mod splice;
pub mod stats;
