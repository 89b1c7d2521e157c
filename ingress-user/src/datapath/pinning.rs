//! Pure rules of the pinned state under `--pin-path` (no aya, no system calls; the
//! I/O is in [`super::pins`] and [`super::detach`]): which pin path is acceptable, how
//! pins are named, whether a pinned map can be adopted (its definition against the
//! one the object expects, as a list of differences), and in which order `ingress
//! detach` removes pins.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// `--pin-path` by default.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/ebpf-ingress";
/// Where the agent mounts bpffs when nothing is mounted there.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// A map as the kernel defines it (`bpf_map_info` / the object's map definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// One field in which a pinned map differs from what the programs expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub map: String,
    pub field: &'static str,
    pub pinned: String,
    pub expected: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "map {}: {} is {} pinned, {} expected", self.map, self.field, self.pinned, self.expected)
    }
}

/// Every difference between the maps found pinned and the definitions the object
/// expects, in the order of `expected`. A map that is not pinned yet is no
/// difference (it is created and pinned); a pinned map the object does not name
/// is left alone.
pub fn compare(expected: &[(&str, MapDef)], pinned: &[(&str, MapDef)]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (name, want) in expected {
        let Some((_, got)) = pinned.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let mut differ = |field: &'static str, pinned: String, expected: String| {
            if pinned != expected {
                out.push(Mismatch { map: name.to_string(), field, pinned, expected });
            }
        };
        differ("type", map_type_name(got.map_type), map_type_name(want.map_type));
        differ("key size", bytes(got.key_size), bytes(want.key_size));
        differ("value size", bytes(got.value_size), bytes(want.value_size));
        differ("max entries", got.max_entries.to_string(), want.max_entries.to_string());
        differ("flags", format!("{:#x}", got.flags), format!("{:#x}", want.flags));
    }
    out
}

fn bytes(n: u32) -> String {
    format!("{n} bytes")
}

/// `BPF_MAP_TYPE_*` by number (linux/bpf.h), for messages.
pub fn map_type_name(t: u32) -> String {
    let name = match t {
        1 => "HASH",
        2 => "ARRAY",
        3 => "PROG_ARRAY",
        4 => "PERF_EVENT_ARRAY",
        5 => "PERCPU_HASH",
        6 => "PERCPU_ARRAY",
        9 => "LRU_HASH",
        10 => "LRU_PERCPU_HASH",
        11 => "LPM_TRIE",
        14 => "DEVMAP",
        15 => "SOCKMAP",
        18 => "SOCKHASH",
        27 => "RINGBUF",
        _ => return format!("type {t}"),
    };
    format!("{name} ({t})")
}

/// Why the pinned maps cannot be adopted, and what to run.
pub fn incompatible_message(dir: &Path, mismatches: &[Mismatch]) -> String {
    let list: Vec<String> = mismatches.iter().map(|m| format!("  - {m}")).collect();
    format!(
        "the maps pinned under {dir} do not match this agent's eBPF programs (pinned by another version?):\n{}\n\
         adopting them would corrupt their state. Remove the pinned state with `ingress detach --pin-path {dir}` \
         (this drops its counters and tracked flows), then start the agent again",
        list.join("\n"),
        dir = dir.display()
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --pin-path `{path}`: {reason}")]
pub struct PinPathError {
    pub path: String,
    pub reason: &'static str,
}

/// Checks `--pin-path`: an absolute directory of its own below the bpffs mount
/// (`ingress detach` removes every pin in it, so never the mount itself), without
/// `..`. Returns it without a trailing `/` or `.` components.
pub fn validate_pin_path(path: &Path) -> Result<PathBuf, PinPathError> {
    let err = |reason| PinPathError { path: path.display().to_string(), reason };
    if !path.is_absolute() {
        return Err(err("must be an absolute path (e.g. /sys/fs/bpf/ebpf-ingress)"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(err("must not contain `..`"));
    }
    let clean: PathBuf = path.components().filter(|c| *c != Component::CurDir).collect();
    if clean == Path::new("/") || clean == Path::new(BPFFS_ROOT) || clean == Path::new("/sys/fs") {
        return Err(err("must be a directory of its own below the bpffs mount, e.g. /sys/fs/bpf/ebpf-ingress"));
    }
    if clean.file_name().is_some_and(|n| n.len() > 200) {
        return Err(err("the directory name is too long"));
    }
    Ok(clean)
}

/// Pin file name of a link: `link@KIND@TARGET`, e.g. `link@xdp-driver@eth0` (XDP in
/// driver mode on eth0), `link@tcx-ingress@eth0`, `link@cgroup-connect4@<id>`. bpffs
/// refuses names with a `.` (reserved), so a `.` of TARGET (a VLAN interface
/// `eth0.100`) is written `:` (never in an interface name), a `/` `_`; KIND has
/// neither `.` nor `@`.
pub fn link_pin_name(kind: &str, target: &str) -> String {
    debug_assert!(!kind.contains(['.', '/', '@']), "link kind {kind}");
    format!("link@{kind}@{}", target.replace('.', ":").replace('/', "_"))
}

/// `(KIND, TARGET as pinned)` of a link pin name; None for any other pin (a map).
pub fn parse_link_pin(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("link@")?;
    let (kind, target) = rest.split_once('@')?;
    (!kind.is_empty() && !target.is_empty()).then_some((kind, target))
}

/// The XDP link kind for an attach mode (`driver` or `generic`): the mode is in the
/// pin name because the kernel's link info does not say it, and an adopting agent
/// reports it.
pub fn xdp_link_kind(mode: &str) -> String {
    format!("xdp-{mode}")
}

/// One step of `ingress detach` on the pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Detach the link (BPF_LINK_DETACH, so even an agent still holding it loses the
    /// attachment) and remove its pin.
    Link(String),
    /// Remove the pin of a map (or anything else pinned there).
    Pin(String),
}

/// The order `ingress detach` removes the pins it found: links first (traffic stops
/// going through our programs while their maps still exist), then maps, each group
/// sorted so the report reads the same every time.
pub fn detach_order(mut names: Vec<String>) -> Vec<Removal> {
    names.sort();
    let (links, pins): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| parse_link_pin(n).is_some());
    links.into_iter().map(Removal::Link).chain(pins.into_iter().map(Removal::Pin)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: MapDef = MapDef { map_type: 5, key_size: 4, value_size: 16, max_entries: 4096, flags: 0 };

    #[test]
    fn identical_or_missing_pins_are_compatible() {
        assert!(compare(&[("XDP_STATS", STATS)], &[("XDP_STATS", STATS)]).is_empty());
        // not pinned yet: created and pinned, nothing to compare
        assert!(compare(&[("XDP_STATS", STATS)], &[]).is_empty());
        // a pinned map this object does not use is not ours to judge
        let other = MapDef { map_type: 1, ..STATS };
        assert!(compare(&[("XDP_STATS", STATS)], &[("OLD_MAP", other)]).is_empty());
    }

    #[test]
    fn every_differing_field_is_named_with_both_values() {
        let pinned = MapDef { map_type: 1, key_size: 8, value_size: 24, max_entries: 1024, flags: 1 };
        let d = compare(&[("XDP_STATS", STATS)], &[("XDP_STATS", pinned)]);
        let fields: Vec<_> = d.iter().map(|m| m.field).collect();
        assert_eq!(fields, ["type", "key size", "value size", "max entries", "flags"]);
        assert_eq!(d[0].pinned, "HASH (1)");
        assert_eq!(d[0].expected, "PERCPU_HASH (5)");
        assert_eq!(d[2].to_string(), "map XDP_STATS: value size is 24 bytes pinned, 16 bytes expected");
        assert_eq!((d[4].pinned.as_str(), d[4].expected.as_str()), ("0x1", "0x0"));
        assert_eq!(map_type_name(99), "type 99");
    }

    #[test]
    fn only_the_differing_field_of_each_map_is_listed() {
        let a = MapDef { value_size: 32, ..STATS };
        let b = MapDef { max_entries: 10, ..STATS };
        let d = compare(&[("A", STATS), ("B", STATS), ("C", STATS)], &[("B", b), ("A", a), ("C", STATS)]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].map.as_str(), d[0].field), ("A", "value size"));
        assert_eq!((d[1].map.as_str(), d[1].field, d[1].pinned.as_str()), ("B", "max entries", "10"));
    }

    #[test]
    fn the_refusal_says_what_differs_and_what_to_run() {
        let d = compare(&[("XDP_STATS", STATS)], &[("XDP_STATS", MapDef { value_size: 8, ..STATS })]);
        let m = incompatible_message(Path::new("/sys/fs/bpf/x"), &d);
        assert!(m.contains("map XDP_STATS: value size is 8 bytes pinned, 16 bytes expected"), "{m}");
        assert!(m.contains("`ingress detach --pin-path /sys/fs/bpf/x`"), "{m}");
    }

    #[test]
    fn pin_paths_are_absolute_dirs_of_their_own() {
        assert_eq!(validate_pin_path(Path::new(DEFAULT_PIN_PATH)).unwrap(), Path::new(DEFAULT_PIN_PATH));
        assert_eq!(validate_pin_path(Path::new("/sys/fs/bpf/a/./b/")).unwrap(), Path::new("/sys/fs/bpf/a/b"));
        for (bad, why) in [
            ("relative/dir", "absolute"),
            ("/sys/fs/bpf/../x", "`..`"),
            ("/sys/fs/bpf", "of its own"),
            ("/sys/fs/bpf/", "of its own"),
            ("/sys/fs/bpf/.", "of its own"),
            ("/", "of its own"),
        ] {
            let e = validate_pin_path(Path::new(bad)).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn link_pin_names_round_trip_and_maps_are_not_links() {
        let n = link_pin_name(&xdp_link_kind("driver"), "eth0.100");
        assert_eq!(n, "link@xdp-driver@eth0:100");
        assert!(!n.contains('.'), "bpffs refuses dots in names");
        assert_eq!(parse_link_pin(&n), Some(("xdp-driver", "eth0:100")));
        assert_eq!(link_pin_name("cgroup-connect4", "/sys/fs/cgroup/x"), "link@cgroup-connect4@_sys_fs_cgroup_x");
        for map in ["XDP_STATS", "link", "link@", "link@xdp", "link@@eth0", "linkxdp@eth0"] {
            assert_eq!(parse_link_pin(map), None, "{map}");
        }
    }

    #[test]
    fn detach_removes_links_before_maps() {
        let found =
            vec!["XDP_STATS".into(), "link@xdp-driver@eth0".into(), "L4_CT".into(), "link@tcx-ingress@br0".into()];
        assert_eq!(
            detach_order(found),
            [
                Removal::Link("link@tcx-ingress@br0".into()),
                Removal::Link("link@xdp-driver@eth0".into()),
                Removal::Pin("L4_CT".into()),
                Removal::Pin("XDP_STATS".into()),
            ]
        );
        assert!(detach_order(vec![]).is_empty());
    }
}
