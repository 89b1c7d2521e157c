//! The ingress agent as a library: the binary (`main.rs`) parses the command line
//! ([`cli`]) and calls [`app`]; the root-only test crate drives the same code.
//!
//! Pure parts (no I/O, no async): [`config`], [`resources`], [`routing`], the views in
//! [`telemetry`] and [`admin::view`], [`datapath::translate`].
//! Edges: [`sources`] (manifest files, Kubernetes), [`proxy`] (sockets), [`admin`],
//! [`datapath`] (kernel).

pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod proxy;
pub mod reload;
pub mod resources;
pub mod routing;
pub mod sources;
pub mod telemetry;
