//! Which endpoint of a backend gets the next request: round robin per backend. The
//! compiled table is immutable; this state lives in the proxy and survives table swaps
//! (a backend keeps its place in the rotation when an unrelated route changes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::routing::{Backend, BackendTarget};

/// Backends remembered at most; past that the cursors start over (names of removed
/// backends would otherwise pile up across table swaps).
const MAX_BACKENDS: usize = 4096;

#[derive(Default)]
pub struct EndpointCursors(Mutex<HashMap<String, usize, foldhash::fast::RandomState>>);

impl EndpointCursors {
    /// The next endpoint of `backend`; None when it has no ready endpoint or the
    /// reference is invalid.
    pub fn pick(&self, backend: &Backend) -> Option<SocketAddr> {
        let BackendTarget::Endpoints(eps) = &backend.target else { return None };
        if eps.is_empty() {
            return None;
        }
        let mut m = self.0.lock().expect("endpoint cursors");
        let i = match m.get_mut(&backend.name) {
            Some(next) => {
                let i = *next;
                *next = next.wrapping_add(1);
                i
            }
            // a backend seen for the first time: the only allocation
            None => {
                if m.len() >= MAX_BACKENDS {
                    m.clear();
                }
                m.insert(backend.name.clone(), 1);
                0
            }
        };
        Some(eps[i % eps.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, eps: &[&str]) -> Backend {
        let eps = eps.iter().map(|e| e.parse().unwrap()).collect();
        Backend::new(name.into(), 1, vec![], BackendTarget::Endpoints(eps))
    }

    #[test]
    fn each_backend_rotates_through_its_own_endpoints() {
        let c = EndpointCursors::default();
        let a = backend("ns/a:80", &["10.0.0.1:80", "10.0.0.2:80"]);
        let b = backend("ns/b:80", &["10.0.1.1:80", "10.0.1.2:80"]);
        // interleaved requests: each backend still alternates between its endpoints
        let picks: Vec<String> =
            (0..4).flat_map(|_| [c.pick(&a), c.pick(&b)]).map(|e| e.unwrap().to_string()).collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:80",
                "10.0.1.1:80",
                "10.0.0.2:80",
                "10.0.1.2:80",
                "10.0.0.1:80",
                "10.0.1.1:80",
                "10.0.0.2:80",
                "10.0.1.2:80"
            ]
        );
    }

    #[test]
    fn no_ready_endpoint_or_an_invalid_ref_picks_none() {
        let c = EndpointCursors::default();
        assert!(c.pick(&backend("ns/a:80", &[])).is_none());
        let invalid = Backend::new("ns/x:80".into(), 1, vec![], BackendTarget::Invalid("BackendNotFound".into()));
        assert!(c.pick(&invalid).is_none());
    }
}
