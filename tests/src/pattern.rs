//! Bodies that show where their bytes came from: a seeded, non-periodic byte stream
//! (a repeated or shifted segment never looks like the original), and FNV-1a to
//! compare what one end sent with what the other got.

/// Writes the bytes at `offset..offset + buf.len()` of the stream `seed`.
/// Byte `at` is byte `at % 8` (little-endian) of `splitmix(seed ^ (at / 8))`; whole
/// words are written at once (a gibibyte in a debug build takes seconds, not minutes).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut at = offset;
    let mut rest = buf;
    while !rest.is_empty() {
        let word = splitmix(seed ^ (at / 8)).to_le_bytes();
        let from = (at % 8) as usize;
        let n = (8 - from).min(rest.len());
        rest[..n].copy_from_slice(&word[from..from + n]);
        rest = &mut rest[n..];
        at += n as u64;
    }
}

/// A `Write` that compares what it is given with the stream `seed` from its start,
/// keeping none of it: for bodies too large to hold (the gibibyte tests).
pub struct Expect {
    seed: u64,
    /// Bytes compared so far.
    pub len: u64,
    /// Where the first byte that differs was, if one did.
    pub first_difference: Option<u64>,
    want: Vec<u8>,
}

impl Expect {
    pub fn new(seed: u64) -> Self {
        Expect { seed, len: 0, first_difference: None, want: Vec::new() }
    }
}

impl std::io::Write for Expect {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.first_difference.is_none() {
            self.want.resize(buf.len(), 0);
            fill(self.seed, self.len, &mut self.want);
            if let Some(i) = buf.iter().zip(&self.want).position(|(a, b)| a != b) {
                self.first_difference = Some(self.len + i as u64);
            }
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first `len` bytes of the stream `seed`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, 0, &mut v);
    v
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: enough to tell two bodies apart in a test.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn of(data: &[u8]) -> u64 {
        let mut h = Fnv::default();
        h.update(data);
        h.0
    }
}

impl std::io::Write for Fnv {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where `got` first differs from the stream `seed` (None: identical for its length),
/// and, when the bytes there are an earlier part of the stream, that part's offset:
/// a segment delivered twice shows as (offset, Some(earlier offset)).
pub fn first_difference(seed: u64, got: &[u8]) -> Option<(usize, Option<usize>)> {
    let want = bytes(seed, got.len());
    let at = got.iter().zip(&want).position(|(a, b)| a != b)?;
    let probe = &got[at..got.len().min(at + 64)];
    let earlier = (0..at).rev().find(|&s| want[s..].starts_with(probe));
    Some((at, earlier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_segment_is_found_and_named() {
        let sent = bytes(3, 200_000);
        let mut got = sent[..62177].to_vec();
        got.extend_from_slice(&sent[60729..60729 + 1448]); // one segment again
        got.extend_from_slice(&sent[62177..sent.len() - 1448]);
        assert_eq!(got.len(), sent.len());
        assert_ne!(Fnv::of(&got), Fnv::of(&sent));
        assert_eq!(first_difference(3, &got), Some((62177, Some(60729))));
        assert_eq!(first_difference(3, &sent), None);
        // not periodic: no shift by a segment size looks like the original
        for shift in [1, 8, 200, 251, 1448, 4096] {
            assert_ne!(&sent[shift..shift + 64], &sent[..64], "shift {shift}");
        }
        let mut part = vec![0u8; 1000];
        fill(3, 5000, &mut part);
        assert_eq!(&part[..], &sent[5000..6000], "fill at an offset is the same stream");
        // the word-wise fill is the byte-wise definition, at every alignment
        for (off, len) in [(0, 17), (3, 1), (5, 13), (7, 9), (8, 8), (13, 100)] {
            let mut b = vec![0u8; len];
            fill(9, off, &mut b);
            let by_byte: Vec<u8> =
                (off..off + len as u64).map(|at| (splitmix(9 ^ (at / 8)) >> ((at % 8) * 8)) as u8).collect();
            assert_eq!(b, by_byte, "offset {off} length {len}");
        }
    }

    #[test]
    fn expect_finds_the_first_byte_that_differs_across_writes() {
        use std::io::Write;
        let sent = bytes(4, 10_000);
        let mut e = Expect::new(4);
        for part in sent.chunks(777) {
            e.write_all(part).unwrap();
        }
        assert_eq!((e.len, e.first_difference), (10_000, None));
        let mut got = sent.clone();
        got[5432] ^= 1;
        got[7000] ^= 1;
        let mut e = Expect::new(4);
        for part in got.chunks(1000) {
            e.write_all(part).unwrap();
        }
        assert_eq!((e.len, e.first_difference), (10_000, Some(5432)));
    }
}
