//! `ingress check`: the preflight. [`gather`] reads the facts (the I/O edge, changing
//! nothing), [`report`] turns them into rows (pure: ok / fallback / blocker, each with
//! what to do), printed as a table or JSON; a blocker makes the command fail.

use std::path::Path;

pub mod gather;
pub mod report;

pub use report::{Report, Row, Status};

/// Where the agent pins its maps and links by default (`--pin-path`).
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/ebpf-ingress";

/// Gathers the facts in this network namespace and builds the report.
pub async fn check(interface: Option<&str>, pin_path: &Path) -> Report {
    report::build(&gather::gather(interface, pin_path).await)
}
