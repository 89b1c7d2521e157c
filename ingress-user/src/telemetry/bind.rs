//! Delayed binding's part of `/stats` and `ingress stats` (its `/metrics` families are in
//! [`super::prometheus`]): where the kernel
//! pieces are attached, how many hosts are bound, and the first-segment program's
//! outcomes (`BIND_FIRST_COUNTS`: bound, fallback and each other reason).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindView {
    /// Times the maps were synced with the routes.
    pub syncs: u64,
    pub attached: Vec<String>,
    /// Hosts bound in the kernel now (entries of `BIND_HOSTS`).
    pub hosts: u64,
    /// Frontends the SYN cookie answers (`addr:port`).
    pub targets: Vec<String>,
    pub path_mss: u16,
    /// `bind_first`'s outcomes by name, summed over CPUs.
    pub first_segment: Vec<(String, u64)>,
}

impl BindView {
    /// The count of outcome `name` (0 when absent).
    pub fn count(&self, name: &str) -> u64 {
        self.first_segment.iter().find(|(n, _)| n == name).map(|(_, c)| *c).unwrap_or(0)
    }
}

/// The `ingress stats` lines.
pub fn format_bind(v: &BindView) -> String {
    let mut out = format!(
        "kernel binding: {} hosts bound; cookie answers {}; path MSS {}; attached: {}\n",
        v.hosts,
        if v.targets.is_empty() { "nothing".to_string() } else { v.targets.join(", ") },
        v.path_mss,
        v.attached.join(", ")
    );
    let counts: Vec<String> = v.first_segment.iter().map(|(n, c)| format!("{n} {c}")).collect();
    out += &format!("kernel binding first segments: {}\n", counts.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_name_every_outcome_and_go_before_eof() {
        let v = BindView {
            syncs: 1,
            attached: vec!["bind_first on eth0".into()],
            hosts: 2,
            targets: vec!["198.18.0.2:8080".into()],
            path_mss: 1410,
            first_segment: vec![("bound".into(), 3), ("fallback".into(), 1)],
        };
        assert_eq!((v.count("bound"), v.count("fallback"), v.count("x")), (3, 1, 0));
        let t = format_bind(&v);
        assert!(t.contains("2 hosts bound; cookie answers 198.18.0.2:8080; path MSS 1410"), "{t}");
        assert!(t.contains("bound 3, fallback 1"), "{t}");
    }
}
