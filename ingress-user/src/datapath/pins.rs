//! The pinned state on bpffs (the I/O side of [`super::pinning`]): bpffs mounted at
//! /sys/fs/bpf when it is not, the `--pin-path` directory, the map definitions the
//! object expects against those pinned (refusing to adopt a map that differs), and
//! pinning and re-opening links.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use ingress_common::maps::PINNED_MAPS;

use super::pinning::{BPFFS_ROOT, MapDef, Mismatch, incompatible_message, link_pin_name, validate_pin_path};

/// statfs f_type of bpffs (linux/magic.h).
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Path(#[from] super::pinning::PinPathError),
    #[error(
        "cannot mount bpffs at /sys/fs/bpf ({0}); pinned state needs it: mount it (`mount -t bpf bpf /sys/fs/bpf`, needs CAP_SYS_ADMIN) or choose a --pin-path on a mounted bpffs"
    )]
    Mount(std::io::Error),
    #[error(
        "--pin-path {0} is not on a bpffs: pins live only on a BPF filesystem; choose a path under /sys/fs/bpf or mount one (`mount -t bpf bpf DIR`)"
    )]
    NotBpffs(PathBuf),
    #[error("cannot create the pin directory {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("the eBPF object does not parse: {0}")]
    Object(String),
    #[error("map {0} is listed in PINNED_MAPS but missing from the eBPF object")]
    NotInObject(&'static str),
    #[error(
        "cannot read pinned map {name} at {path}: {reason}; remove the pinned state with `ingress detach --pin-path {dir}`"
    )]
    Unreadable { name: &'static str, path: PathBuf, dir: PathBuf, reason: String },
    #[error("{0}")]
    Incompatible(String),
    #[error("cannot pin link {path}: {reason}")]
    PinLink { path: PathBuf, reason: String },
    #[error("cannot open pinned link {path}: {reason}")]
    OpenLink { path: PathBuf, reason: String },
}

/// The agent's pin directory, on a mounted bpffs.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Checks `dir` ([`validate_pin_path`]), mounts bpffs at /sys/fs/bpf when `dir` is
    /// below it and nothing is mounted there, creates `dir` and checks that it is on a
    /// bpffs.
    pub fn open(dir: &Path) -> Result<Self, PinError> {
        let dir = validate_pin_path(dir)?;
        if dir.starts_with(BPFFS_ROOT) && !is_bpffs(Path::new(BPFFS_ROOT)) {
            mount_bpffs()?;
            tracing::info!("mounted bpffs at {BPFFS_ROOT}");
        }
        std::fs::create_dir_all(&dir).map_err(|source| PinError::Create { path: dir.clone(), source })?;
        if !is_bpffs(&dir) {
            return Err(PinError::NotBpffs(dir));
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the link `link.KIND.TARGET` is pinned.
    pub fn link_path(&self, kind: &str, target: &str) -> PathBuf {
        self.dir.join(link_pin_name(kind, target))
    }

    /// Refuses to go on when a pinned map differs from what `object` expects (aya
    /// would reuse it unchecked); returns the names of the maps found pinned, which
    /// the load adopts as they are.
    pub fn check_maps(&self, object: &[u8]) -> Result<Vec<&'static str>, PinError> {
        let (mismatches, pinned) = compare_with_object(object, &self.dir)?;
        if !mismatches.is_empty() {
            return Err(PinError::Incompatible(incompatible_message(&self.dir, &mismatches)));
        }
        Ok(pinned)
    }

    /// Pins `link` as `link.KIND.TARGET` (replacing a stale pin of that name): the
    /// attachment then outlives the agent. One call for every kind of link (XDP now,
    /// tc and cgroup links too).
    pub fn pin_link(&self, kind: &str, target: &str, link: FdLink) -> Result<PinnedLink, PinError> {
        let path = self.link_path(kind, target);
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        link.pin(&path).map_err(|e| PinError::PinLink { path, reason: with_sources(&e) })
    }

    /// The link pinned as `link.KIND.TARGET`, if any (its pin stays).
    pub fn pinned_link(&self, kind: &str, target: &str) -> Result<Option<FdLink>, PinError> {
        let path = self.link_path(kind, target);
        if !path.exists() {
            return Ok(None);
        }
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| PinError::OpenLink { path: path.clone(), reason: e.to_string() })?;
        Ok(Some(FdLink::from(pinned)))
    }

    /// Removes the pin `link.KIND.TARGET` (a link whose interface is gone).
    pub fn remove_link_pin(&self, kind: &str, target: &str) {
        let _ = std::fs::remove_file(self.link_path(kind, target));
    }
}

/// The pinned maps under `dir` that differ from what `object` expects, and the
/// names of those pinned there (for `ingress check`, and the agent's start).
pub fn compare_with_object(object: &[u8], dir: &Path) -> Result<(Vec<Mismatch>, Vec<&'static str>), PinError> {
    let expected = expected_defs(object)?;
    let pinned = pinned_defs(dir)?;
    let names = pinned.iter().map(|(n, _)| *n).collect();
    Ok((super::pinning::compare(&expected, &pinned), names))
}

/// The definitions of the [`PINNED_MAPS`] in the object (as aya creates them: no
/// size adjustment applies to these map types).
pub fn expected_defs(object: &[u8]) -> Result<Vec<(&'static str, MapDef)>, PinError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| PinError::Object(e.to_string()))?;
    PINNED_MAPS
        .iter()
        .map(|name| {
            let m = obj.maps.get(*name).ok_or(PinError::NotInObject(name))?;
            let def = MapDef {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
            };
            Ok((*name, def))
        })
        .collect()
}

/// The definitions of the [`PINNED_MAPS`] pinned under `dir` (BPF_OBJ_GET +
/// BPF_OBJ_GET_INFO_BY_FD); maps not pinned there are left out.
pub fn pinned_defs(dir: &Path) -> Result<Vec<(&'static str, MapDef)>, PinError> {
    let mut out = Vec::new();
    for name in PINNED_MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let unreadable = |reason: String| PinError::Unreadable { name, path: path.clone(), dir: dir.into(), reason };
        let info = aya::maps::MapInfo::from_pin(&path).map_err(|e| unreadable(with_sources(&e)))?;
        let map_type = info.map_type().map_err(|e| unreadable(format!("unknown map type: {e}")))? as u32;
        let def = MapDef {
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        out.push((*name, def));
    }
    Ok(out)
}

/// Whether `path` (or, when it does not exist yet, its nearest existing parent) is on
/// a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => return false,
        }
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as u32 == BPF_FS_MAGIC
}

/// mount -t bpf bpf /sys/fs/bpf (by hand: one call; the mount crates wrap the same).
fn mount_bpffs() -> Result<(), PinError> {
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: valid C strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(PinError::Mount(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// An error with its causes (aya's syscall errors name the call; the errno is the source).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s += &format!(": {c}");
        cause = c.source();
    }
    s
}
