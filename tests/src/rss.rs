//! Where a process's resident memory is (`/proc/PID/smaps`): the agent binary's file
//! pages, other files (libc, ...), the main heap (brk), glibc's per-thread arenas,
//! thread stacks and other anonymous mappings. `netbench --rss-only` prints it for
//! each dataplane while the agent holds its idle connections. The parse is pure.

use std::fmt::Write as _;

/// Resident KiB by kind of mapping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Breakdown {
    /// File pages of the executable (its text, rodata, relro).
    pub binary_file: u64,
    /// Anonymous pages in the executable's own mappings (.data/.bss written to).
    pub binary_anon: u64,
    /// File pages of every other file (shared libraries, ...).
    pub other_files: u64,
    /// The main arena (`[heap]`, brk).
    pub heap: u64,
    /// glibc's secondary arenas (64 MiB reservations, one per thread that allocates).
    pub arenas: u64,
    /// Thread stacks (an anonymous mapping right after a 4 KiB no-access guard).
    pub stacks: u64,
    /// The main thread's `[stack]`.
    pub main_stack: u64,
    /// Every other anonymous mapping (large mmapped allocations, ...).
    pub other_anon: u64,
    /// Mappings of each kind (arenas, stacks) for the record.
    pub arena_count: u32,
    pub stack_count: u32,
}

impl Breakdown {
    pub fn total(&self) -> u64 {
        self.binary_file
            + self.binary_anon
            + self.other_files
            + self.heap
            + self.arenas
            + self.stacks
            + self.main_stack
            + self.other_anon
    }

    /// One line per kind, MB with one decimal.
    pub fn format(&self) -> String {
        let mb = |k: u64| format!("{:.1} MB", k as f64 / 1024.0);
        let mut s = String::new();
        writeln!(s, "  total (sum of smaps Rss)   {}", mb(self.total())).unwrap();
        writeln!(s, "  binary, file pages         {}", mb(self.binary_file)).unwrap();
        writeln!(s, "  binary, anon (.data/.bss)  {}", mb(self.binary_anon)).unwrap();
        writeln!(s, "  other files (libc, ...)    {}", mb(self.other_files)).unwrap();
        writeln!(s, "  main heap [heap]           {}", mb(self.heap)).unwrap();
        writeln!(s, "  glibc arenas ({:>3})         {}", self.arena_count, mb(self.arenas)).unwrap();
        writeln!(s, "  thread stacks ({:>3})        {}", self.stack_count, mb(self.stacks)).unwrap();
        writeln!(s, "  main [stack]               {}", mb(self.main_stack)).unwrap();
        writeln!(s, "  other anonymous            {}", mb(self.other_anon)).unwrap();
        s
    }
}

/// One mapping of smaps: its address range, permissions, path, and Rss / Anonymous.
#[derive(Debug, Clone)]
struct Vma {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    rss: u64,
    anon: u64,
}

fn parse_vmas(smaps: &str) -> Vec<Vma> {
    let mut out: Vec<Vma> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("").to_string();
            // offset, dev, inode, then the path (may hold spaces)
            let path = f.skip(3).collect::<Vec<_>>().join(" ");
            out.push(Vma { start, end, perms, path, rss: 0, anon: 0 });
            continue;
        }
        let value = || f.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if let Some(v) = out.last_mut() {
            match first {
                "Rss:" => v.rss = value(),
                "Anonymous:" => v.anon = value(),
                _ => {}
            }
        }
    }
    out
}

/// The breakdown of `smaps` (the text of `/proc/PID/smaps`) for the executable `exe`.
pub fn parse(smaps: &str, exe: &str) -> Breakdown {
    const ARENA: u64 = 64 << 20;
    let vmas = parse_vmas(smaps);
    let mut b = Breakdown::default();
    for (i, v) in vmas.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &vmas[p]);
        let next = vmas.get(i + 1);
        if v.path == exe {
            b.binary_file += v.rss - v.anon;
            b.binary_anon += v.anon;
        } else if v.path == "[heap]" {
            b.heap += v.rss;
        } else if v.path == "[stack]" {
            b.main_stack += v.rss;
        } else if v.path.starts_with('/') {
            b.other_files += v.rss - v.anon;
            b.other_anon += v.anon;
        } else if v.path.is_empty() && v.perms.starts_with("rw") {
            let len = v.end - v.start;
            // an arena: 64 MiB aligned, its rw part followed by its no-access rest
            let arena = v.start % ARENA == 0
                && (len == ARENA
                    || next
                        .is_some_and(|n| n.start == v.end && n.perms.starts_with("---") && n.end - v.start == ARENA));
            // a thread stack: right after its guard page
            let stack = prev.is_some_and(|p| p.end == v.start && p.perms.starts_with("---") && p.end - p.start == 4096);
            if arena {
                b.arenas += v.rss;
                b.arena_count += 1;
            } else if stack {
                b.stacks += v.rss;
                b.stack_count += 1;
            } else {
                b.other_anon += v.rss;
            }
        } else {
            b.other_anon += v.rss;
        }
    }
    b
}

/// The breakdown of process `pid` now.
pub fn of_pid(pid: u32) -> std::io::Result<Breakdown> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    Ok(parse(&smaps, &exe.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d000000000-55d000100000 r--p 00000000 fd:00 123 /usr/bin/ingress
Rss:                 800 kB
Anonymous:             0 kB
55d000100000-55d000200000 rw-p 00100000 fd:00 123 /usr/bin/ingress
Rss:                  40 kB
Anonymous:            30 kB
55d001000000-55d002000000 rw-p 00000000 00:00 0 [heap]
Rss:                2000 kB
Anonymous:          2000 kB
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Rss:                 500 kB
Anonymous:           500 kB
7f0000800000-7f0004000000 ---p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
7f1000000000-7f1000001000 ---p 00000000 00:00 0
Rss:                   0 kB
Anonymous:             0 kB
7f1000001000-7f1000201000 rw-p 00000000 00:00 0
Rss:                  16 kB
Anonymous:            16 kB
7f2000000000-7f2000010000 rw-p 00000000 00:00 0
Rss:                  64 kB
Anonymous:            64 kB
7f3000000000-7f3000100000 r-xp 00000000 fd:00 9 /usr/lib/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
Anonymous:            12 kB
";

    #[test]
    fn each_mapping_lands_in_its_kind() {
        let b = parse(SMAPS, "/usr/bin/ingress");
        assert_eq!((b.binary_file, b.binary_anon), (810, 30));
        assert_eq!(b.heap, 2000);
        assert_eq!((b.arenas, b.arena_count), (500, 1), "rw part + no-access rest = 64 MiB, aligned");
        assert_eq!((b.stacks, b.stack_count), (16, 1), "after a 4 KiB guard");
        assert_eq!(b.other_anon, 64);
        assert_eq!(b.other_files, 900);
        assert_eq!(b.main_stack, 12);
        assert_eq!(b.total(), 810 + 30 + 2000 + 500 + 16 + 64 + 900 + 12);
        assert!(b.format().contains("glibc arenas (  1)         0.5 MB"), "{}", b.format());
    }
}
