//! Where the cgroup v2 hierarchy and bpffs are mounted: a pure parser of
//! `/proc/mounts` ([`Mounts::parse`]) and the `--cgroup` default ([`cgroup_dir`]).

use std::path::{Path, PathBuf};

/// The mounts the data path cares about, in `/proc/mounts` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Mount points of `cgroup2` file systems (the unified hierarchy).
    pub cgroup2: Vec<PathBuf>,
    /// Mount points of `bpf` file systems (bpffs, where pins live).
    pub bpffs: Vec<PathBuf>,
}

/// Where the agent pins by default and mounts bpffs when nothing is mounted there.
pub const BPFFS_DIR: &str = "/sys/fs/bpf";

impl Mounts {
    /// Parses the text of `/proc/mounts` (or `/proc/self/mounts`): one mount per line,
    /// `SOURCE MOUNTPOINT FSTYPE OPTIONS DUMP PASS`, with space, tab, newline and
    /// backslash in paths written as octal escapes (`\040`). Lines with fewer than three
    /// fields are skipped.
    pub fn parse(text: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(_source), Some(point), Some(fstype)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let point = PathBuf::from(unescape(point));
            match fstype {
                "cgroup2" => m.cgroup2.push(point),
                "bpf" => m.bpffs.push(point),
                _ => {}
            }
        }
        m
    }

    /// The cgroup v2 mount the connect hooks attach to by default: `/sys/fs/cgroup`
    /// (unified hosts), else `/sys/fs/cgroup/unified` (hybrid hosts), else the first
    /// cgroup2 mount listed.
    pub fn cgroup2_root(&self) -> Option<&Path> {
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .find_map(|want| self.cgroup2.iter().find(|p| p.as_path() == Path::new(want)))
            .or_else(|| self.cgroup2.first())
            .map(PathBuf::as_path)
    }

    /// Whether bpffs is mounted exactly at `dir`.
    pub fn bpffs_at(&self, dir: &Path) -> bool {
        self.bpffs.iter().any(|p| p == dir)
    }
}

/// Undoes the kernel's octal escapes in a mount path (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/mounts to find the cgroup v2 mount: {0}")]
    Mounts(std::io::Error),
    #[error(
        "no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts); the connect hooks for local clients need one: \
         mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or pass --cgroup PATH"
    )]
    NoCgroup2,
    #[error("--cgroup {0}: {1}")]
    Unusable(PathBuf, String),
}

/// The cgroup v2 directory the connect hooks attach to: `flag` (`--cgroup PATH`) when
/// given, which must be a directory of a cgroup v2 file system; otherwise the cgroup v2
/// mount found in `/proc/mounts` ([`Mounts::cgroup2_root`]).
pub fn cgroup_dir(flag: Option<&Path>) -> Result<PathBuf, CgroupError> {
    match flag {
        Some(dir) => {
            let unusable = |why: String| CgroupError::Unusable(dir.to_path_buf(), why);
            let meta = std::fs::metadata(dir).map_err(|e| unusable(e.to_string()))?;
            if !meta.is_dir() {
                return Err(unusable("not a directory".into()));
            }
            if !is_cgroup2(dir).map_err(|e| unusable(format!("statfs: {e}")))? {
                return Err(unusable(
                    "not on a cgroup v2 file system (a cgroup v1 or other directory); give a directory under the cgroup2 mount \
                     listed in /proc/mounts"
                        .into(),
                ));
            }
            Ok(dir.to_path_buf())
        }
        None => {
            let text = std::fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
            Mounts::parse(&text).cgroup2_root().map(Path::to_path_buf).ok_or(CgroupError::NoCgroup2)
        }
    }
}

/// Whether `dir` is on a cgroup v2 file system (statfs magic CGROUP2_SUPER_MAGIC).
fn is_cgroup2(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statfs with a NUL-terminated path and a zeroed out-parameter it fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type == libc::CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIFIED: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0
";

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
";

    #[test]
    fn unified_host_cgroup2_at_sys_fs_cgroup_and_bpffs_found() {
        let m = Mounts::parse(UNIFIED);
        assert_eq!(m.cgroup2_root(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.bpffs_at(Path::new(BPFFS_DIR)));
        assert!(!m.bpffs_at(Path::new("/sys/fs/bpf/other")));
    }

    #[test]
    fn hybrid_host_uses_the_unified_mount_and_ignores_v1_hierarchies() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.cgroup2, [PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(m.cgroup2_root(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert!(m.bpffs.is_empty(), "no bpffs mounted");
    }

    #[test]
    fn well_known_mount_wins_over_an_earlier_odd_one() {
        let m = Mounts::parse("none /run/x cgroup2 rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        assert_eq!(m.cgroup2_root(), Some(Path::new("/sys/fs/cgroup")));
        let m = Mounts::parse("none /run/x cgroup2 rw 0 0\n");
        assert_eq!(m.cgroup2_root(), Some(Path::new("/run/x")), "any cgroup2 mount beats none");
    }

    #[test]
    fn no_cgroup2_line_means_none() {
        let m = Mounts::parse("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n");
        assert_eq!(m.cgroup2_root(), None);
    }

    #[test]
    fn escaped_paths_and_short_lines() {
        let m = Mounts::parse("bpf /run/my\\040pins bpf rw 0 0\nbroken-line\n\nbpf /a\\134b bpf rw 0 0\n");
        assert_eq!(m.bpffs, [PathBuf::from("/run/my pins"), PathBuf::from("/a\\b")]);
        // a backslash not followed by three octal digits stays as it is
        assert_eq!(unescape("/x\\9y\\04"), "/x\\9y\\04");
    }

    #[test]
    fn cgroup_flag_must_be_a_cgroup2_directory() {
        let e = cgroup_dir(Some(Path::new("/nonexistent/cg"))).unwrap_err().to_string();
        assert!(e.starts_with("--cgroup /nonexistent/cg:"), "{e}");
        let e = cgroup_dir(Some(Path::new("/proc/self/status"))).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = cgroup_dir(Some(Path::new("/proc"))).unwrap_err().to_string();
        assert!(e.contains("not on a cgroup v2 file system"), "{e}");
    }
}
