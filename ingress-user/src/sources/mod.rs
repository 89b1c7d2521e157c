//! Route sources: where the Gateway API objects come from, and how they reach the
//! routing table. [`manifest`] reads a directory of files and [`watch_dir`] reloads it
//! on change; [`k8s`] watches the API server and writes status back; both hand a
//! [`Resources`](crate::resources::Resources) snapshot to a [`publish::Publisher`],
//! which compiles it and swaps it into the table handle, or keeps the last good table.

pub mod k8s;
pub mod manifest;
pub mod publish;
pub mod watch_dir;
