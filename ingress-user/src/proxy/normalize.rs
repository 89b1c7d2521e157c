//! Path normalization before matching, pure: the router matches, and the pod receives,
//! the same normalized path, so no request is routed by a raw path to a backend its
//! normalized path would not select.
//!
//! What is done to an origin-form path (the query string is not touched):
//! - percent-encoded unreserved characters (RFC 3986 2.3: `A-Z a-z 0-9 - . _ ~`) are
//!   decoded (`/%61pi` -> `/api`, `%2e` -> `.`), and the hex digits of every other
//!   percent-encoding are uppercased (6.2.2.1: `%3a` -> `%3A`);
//! - repeated slashes are merged (`//a///b` -> `/a/b`), as Envoy's `merge_slashes`;
//! - dot segments are removed (5.2.4), the percent-encoded ones included
//!   (`/a/%2e%2E/b` -> `/b`), as Envoy's `normalize_path`;
//! - an encoded slash or backslash (`%2F`, `%5C`) is kept encoded: it is never decoded
//!   into a separator, so the router sees one segment where the pod sees one segment
//!   (Envoy's default `KEEP_UNCHANGED`; applications such as GitLab and npm registries
//!   put `%2F` in paths, so refusing it would break them);
//! - refused (400): a raw backslash (not a URI character, RFC 3986 2; browsers turn it
//!   into `/` and some servers treat it as one, so no rule could be sure what a pod
//!   does with it) and a malformed percent-encoding (`%zz`, `%4`).
//!
//! An already normal path (the common case) is returned borrowed: no allocation.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path (`*`, authority-form, empty).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadPercent,
    /// A raw `\`.
    Backslash,
}

impl PathError {
    /// The body of the 400 answer.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAbsolute => "request target is not an absolute path\n",
            Self::BadPercent => "malformed percent-encoding in the path\n",
            Self::Backslash => "backslash in the path\n",
        }
    }
}

/// Whether `path` is already what [`normalize`] makes of it. One pass, no allocation.
pub fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.iter().any(|&c| c == b'%' || c == b'\\') {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// The normalized form of origin-form path `path` (see the module text), borrowed when
/// it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let Some(rest) = path.strip_prefix('/') else { return Err(PathError::NotAbsolute) };
    let mut out = String::with_capacity(path.len());
    // the output ends in a slash: the last segment was empty or a dot segment
    let mut trailing = false;
    for raw in rest.split('/') {
        let start = out.len();
        out.push('/');
        decode_segment(raw, &mut out)?;
        match &out[start + 1..] {
            "" | "." => {
                out.truncate(start);
                trailing = true;
            }
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
                trailing = true;
            }
            _ => trailing = false,
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// Appends segment `raw` to `out`: unreserved percent-encodings decoded, the others
/// with uppercase hex digits.
fn decode_segment(raw: &str, out: &mut String) -> Result<(), PathError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // the next '%' or '\': everything before it is copied as is
        let Some(p) = b[i..].iter().position(|&c| c == b'%' || c == b'\\') else {
            out.push_str(&raw[i..]);
            return Ok(());
        };
        out.push_str(&raw[i..i + p]);
        i += p;
        if b[i] == b'\\' {
            return Err(PathError::Backslash);
        }
        let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) else {
            return Err(PathError::BadPercent);
        };
        let c = h << 4 | l;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        }
        i += 3;
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_the_table_says() {
        let cases: &[(&str, &str)] = &[
            // already normal: unchanged
            ("/", "/"),
            ("/api", "/api"),
            ("/api/", "/api/"),
            ("/a/b.c/..d/.e/", "/a/b.c/..d/.e/"),
            // dot segments (RFC 3986 5.2.4)
            ("/api/../secret", "/secret"),
            ("/api/./secret", "/api/secret"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/b/c/../../d", "/a/d"),
            ("/.", "/"),
            // percent-encoded dots are dots
            ("/api/%2e%2e/secret", "/secret"),
            ("/api/%2E%2E/secret", "/secret"),
            ("/api/.%2e/secret", "/secret"),
            ("/api/%2e./secret", "/secret"),
            ("/api/%2e/secret", "/api/secret"),
            ("/a/%2e%2e%2e", "/a/..."),
            // repeated slashes merged
            ("//secret", "/secret"),
            ("/a///b//", "/a/b/"),
            ("//", "/"),
            ("/a//..", "/"),
            // unreserved decoded, others kept with uppercase hex
            ("/%61pi/x", "/api/x"),
            ("/%7Euser/%5f", "/~user/_"),
            ("/a%3ab", "/a%3Ab"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            // encoded slash and backslash: kept encoded, never a separator
            ("/api%2F..%2Fsecret", "/api%2F..%2Fsecret"),
            ("/api%2f..%2fsecret", "/api%2F..%2Fsecret"),
            ("/a/%2e%2e%2fsecret", "/a/..%2Fsecret"),
            ("/a/..%5Cb", "/a/..%5Cb"),
            ("/x/%2F/..", "/x/"),
        ];
        for (raw, want) in cases {
            let got = normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(got, *want, "{raw}");
            // the fast check never lets through a path that normalizing changes
            assert!(!is_normal(raw) || raw == want, "is_normal({raw})");
            assert_eq!(matches!(got, Cow::Borrowed(_)), raw == want, "{raw}: borrowed when unchanged");
            assert!(is_normal(&got) || got.contains('%'), "{raw} -> {got}: normal once normalized");
            assert_eq!(normalize(&got).unwrap(), got, "idempotent: {raw}");
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        let cases: &[(&str, PathError)] = &[
            ("/api\\..\\secret", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%zz", PathError::BadPercent),
            ("/a%4", PathError::BadPercent),
            ("/a%", PathError::BadPercent),
            ("/a%%41", PathError::BadPercent),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), Err(*want), "{raw}");
            assert!(!is_normal(raw), "{raw}");
        }
    }

    #[test]
    fn a_normal_path_is_not_copied() {
        for p in ["/", "/api/v1/users", "/a/b/"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
        // an encoding that stays as it is: the input back, borrowed
        assert!(matches!(normalize("/a%3Ab"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("//a"), Ok(Cow::Owned(_))));
    }
}
