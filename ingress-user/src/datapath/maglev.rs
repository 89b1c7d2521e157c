//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), pure: each endpoint's
//! permutation of the table's slots, and the population of a table of prime size `m`
//! by taking turns, so every endpoint owns `m / n` slots (+-1) and one endpoint
//! leaving moves few slots of the others.
//!
//! The permutation depends only on an endpoint's name (its `IP:PORT`), never on its
//! position in the list or on an id, so the same set always gives the same table.

/// FNV-1a, 64 bits, with a seed mixed in first: stable across builds and platforms
/// (std's hasher makes no such promise), enough to spread names over the table.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in seed.to_le_bytes().iter().chain(data) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64's), so nearby names land far apart.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The (offset, skip) of an endpoint's permutation `offset + j * skip (mod m)`.
fn offset_skip(name: &str, m: u64) -> (u64, u64) {
    let offset = fnv1a(0x6d61_676c_6576_3031, name.as_bytes()) % m;
    let skip = fnv1a(0x6d61_676c_6576_3032, name.as_bytes()) % (m - 1) + 1;
    (offset, skip)
}

/// Fills a table of `m` slots (m prime, larger than `names.len()`) with indexes into
/// `names`. Empty `names`: an empty table (no endpoint).
pub fn populate(names: &[String], m: u32) -> Vec<u32> {
    assert!(m >= 2 && is_prime(m), "Maglev table size {m} must be a prime");
    assert!(names.len() < m as usize, "more endpoints than Maglev slots");
    let m64 = u64::from(m);
    if names.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = names.iter().map(|n| offset_skip(n, m64)).collect();
    let mut next = vec![0u64; names.len()];
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; m as usize];
    let mut filled = 0usize;
    'fill: loop {
        for (i, &(offset, skip)) in perms.iter().enumerate() {
            // The endpoint's next preferred slot that is still free. Since m is prime
            // and 0 < skip < m, the permutation visits every slot, so this ends.
            let mut slot = (offset + next[i] * skip) % m64;
            while table[slot as usize] != EMPTY {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m64;
            }
            table[slot as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m as usize {
                break 'fill;
            }
        }
    }
    table
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_common::l4::{MAGLEV_M, MAX_ENDPOINTS_PER_SERVICE};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.42.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn the_table_size_is_a_prime_well_above_100x_the_endpoints() {
        assert!(is_prime(MAGLEV_M));
        assert!(MAGLEV_M >= 100 * MAX_ENDPOINTS_PER_SERVICE * 2, "{MAGLEV_M}");
        assert!(!is_prime(8190) && !is_prime(1) && is_prime(2) && is_prime(65537));
    }

    #[test]
    fn every_slot_is_filled_and_endpoints_share_evenly() {
        for n in [1, 2, 3, 7, MAX_ENDPOINTS_PER_SERVICE as usize] {
            let t = populate(&names(n), MAGLEV_M);
            assert_eq!(t.len(), MAGLEV_M as usize);
            let c = counts(&t, n);
            let ideal = MAGLEV_M as f64 / n as f64;
            for (i, &k) in c.iter().enumerate() {
                // Maglev's turn-taking gives each endpoint floor or ceil of m/n.
                assert!((k as f64 - ideal).abs() <= 1.0 + ideal * 0.01, "n={n} endpoint {i}: {k} slots, ideal {ideal}");
            }
        }
    }

    #[test]
    fn the_same_set_gives_the_same_table() {
        let a = populate(&names(5), MAGLEV_M);
        let b = populate(&names(5), MAGLEV_M);
        assert_eq!(a, b);
        // a different set gives a different table (the test could fail)
        assert_ne!(a, populate(&names(6), MAGLEV_M)[..].to_vec());
    }

    #[test]
    fn one_endpoint_leaving_moves_few_slots_of_the_others() {
        for n in [3usize, 10, 32] {
            let before_names = names(n);
            let before = populate(&before_names, MAGLEV_M);
            // endpoint 1 leaves
            let after_names: Vec<String> =
                before_names.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, s)| s.clone()).collect();
            let after = populate(&after_names, MAGLEV_M);
            let mut moved = 0usize;
            for (slot, (&b, &a)) in before.iter().zip(&after).enumerate() {
                let b_name = &before_names[b as usize];
                let a_name = &after_names[a as usize];
                if b != 1 && b_name != a_name {
                    moved += 1;
                }
                let _ = slot;
            }
            // Slots of endpoints that stayed and moved anyway: a small fraction (the
            // paper measures a few percent).
            let stayed = before.iter().filter(|&&e| e != 1).count();
            let frac = moved as f64 / stayed as f64;
            assert!(frac < 0.06, "n={n}: {moved} of {stayed} slots of staying endpoints moved ({frac:.3})");
            // and the leaving endpoint's slots all went to others
            assert!(after.iter().all(|&e| (e as usize) < after_names.len()));
        }
    }

    #[test]
    fn an_empty_set_gives_an_empty_table() {
        assert!(populate(&[], MAGLEV_M).is_empty());
    }
}
