//! Bodies that show where their bytes came from: a seeded, non-periodic byte stream
//! (a repeated or shifted segment never looks like the original), and FNV-1a to
//! compare what one end sent with what the other got.

/// Writes the bytes at `offset..offset + buf.len()` of the stream `seed`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        *b = (splitmix(seed ^ (at / 8)) >> ((at % 8) * 8)) as u8;
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
    }
}
