//! The per-source connection cap (`--max-connections-per-source`) that evicts idle
//! connections, not users: a source at its cap gets its oldest idle connection
//! (parked, or between requests on hyper) closed to admit a new one; only when every
//! one of its connections is busy (a request in flight, or a head being read) is the
//! new connection refused.
//!
//! Cost: the registry is touched only when a connection is accepted and when it
//! closes, under the lock of one of [`SHARDS`] shards chosen by the source address;
//! nothing per request. Whether a connection is idle, and since when, is read from
//! its [`Activity`] (atomics the connection updates anyway), and the source's
//! connections are scanned only when it is at its cap.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::conn::Activity;

/// Lock shards of the registry.
pub const SHARDS: usize = 16;

/// One connection as the registry sees it.
#[derive(Default)]
pub struct Tracked {
    /// Request activity of the connection (shared with its IO and service).
    pub activity: Arc<Activity>,
    /// Notified once when the connection is chosen to make room: it closes if idle,
    /// or after its in-flight request if it just became busy.
    pub evict: Notify,
}

type Conns = HashMap<u64, Arc<Tracked>>;

/// Open client connections per source address.
pub struct Sources {
    /// Connections one source may hold (0: no cap, nothing tracked); a config reload
    /// changes it for the connections that come after ([`Sources::set_max`]).
    max: AtomicUsize,
    shards: Box<[Mutex<HashMap<IpAddr, Conns>>]>,
    hasher: RandomState,
    next_id: AtomicU64,
}

/// How a new connection was admitted.
pub struct Admitted {
    /// Holds the connection's place until dropped.
    pub slot: Slot,
    pub tracked: Arc<Tracked>,
    /// Another idle connection of the source was closed to make room.
    pub evicted: bool,
}

impl Sources {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max: AtomicUsize::new(max as usize),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(0),
        })
    }

    /// A new cap (config reload). Connections opened while there was none stay
    /// untracked.
    pub fn set_max(&self, max: u32) {
        self.max.store(max as usize, Ordering::Relaxed);
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, Conns>> {
        &self.shards[self.hasher.hash_one(ip) as usize % SHARDS]
    }

    /// A place for a new connection from `ip`, or None when the source is at its cap
    /// and none of its connections is idle.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let tracked = Arc::new(Tracked::default());
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return Some(Admitted { slot: Slot { sources: None, ip, id: 0 }, tracked, evicted: false });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(&ip).lock().expect("sources shard");
        let conns = shard.entry(ip).or_default();
        let mut evicted = false;
        if conns.len() >= max {
            let victim = oldest_idle(conns.iter().map(|(id, t)| (*id, t.activity.idle_age())))?;
            if let Some(t) = conns.remove(&victim) {
                t.evict.notify_one();
                evicted = true;
            }
        }
        conns.insert(id, tracked.clone());
        Some(Admitted { slot: Slot { sources: Some(self.clone()), ip, id }, tracked, evicted })
    }

    /// Connections tracked for `ip`.
    #[cfg(test)]
    pub fn held(&self, ip: IpAddr) -> usize {
        self.shard(&ip).lock().expect("sources shard").get(&ip).map_or(0, HashMap::len)
    }

    fn release(&self, ip: IpAddr, id: u64) {
        let mut shard = self.shard(&ip).lock().expect("sources shard");
        if let Some(conns) = shard.get_mut(&ip) {
            // absent if it was evicted: its place went to the connection admitted then
            conns.remove(&id);
            if conns.is_empty() {
                shard.remove(&ip);
            }
        }
    }
}

/// The connection that has been idle longest, among `(id, idle for)` (None: busy).
pub fn oldest_idle(conns: impl IntoIterator<Item = (u64, Option<Duration>)>) -> Option<u64> {
    conns
        .into_iter()
        .filter_map(|(id, idle)| Some((idle?, id)))
        .max_by_key(|(idle, id)| (*idle, u64::MAX - id))
        .map(|(_, id)| id)
}

/// Holds one of a source's connection places until dropped.
pub struct Slot {
    sources: Option<Arc<Sources>>,
    ip: IpAddr,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(s) = &self.sources {
            s.release(self.ip, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_longest_idle_is_picked_and_busy_ones_never() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(oldest_idle([(1, ms(5)), (2, None), (3, ms(9)), (4, ms(2))]), Some(3));
        assert_eq!(oldest_idle([(1, None), (2, None)]), None);
        assert_eq!(oldest_idle([]), None);
        // equal idle times: the older connection (lower id)
        assert_eq!(oldest_idle([(7, ms(3)), (4, ms(3)), (9, ms(3))]), Some(4));
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_makes_room_and_all_busy_refuses() {
        let s = Sources::new(2);
        let first = s.admit(A).expect("room");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = s.admit(A).expect("room");
        assert!(!first.evicted && !second.evicted);
        assert_eq!(s.held(A), 2);
        // another source has its own places
        let other = s.admit(B).expect("room for B");
        // both idle: the first (idle longer) is evicted
        let third = s.admit(A).expect("an idle one makes room");
        assert!(third.evicted);
        assert_eq!(s.held(A), 2, "the evicted connection's place went to the new one");
        tokio::time::timeout(Duration::from_secs(1), first.tracked.evict.notified()).await.expect("first told");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.tracked.evict.notified()).await.is_err(),
            "only one is evicted"
        );
        // the evicted connection closing later does not free a place twice
        drop(first);
        assert_eq!(s.held(A), 2);
        // both busy: refused
        let (_g2, _) = second.tracked.activity.begin();
        let (_g3, _) = third.tracked.activity.begin();
        assert!(s.admit(A).is_none(), "every connection busy");
        assert_eq!(s.held(A), 2);
        drop(other);
        assert_eq!(s.held(B), 0);
        // a connection that closes frees its place
        drop(second);
        let fourth = s.admit(A).expect("a freed place");
        assert!(!fourth.evicted);
        drop((third, fourth));
        assert_eq!(s.held(A), 0);
    }

    #[test]
    fn no_cap_tracks_nothing() {
        let s = Sources::new(0);
        let held: Vec<_> = (0..100).map(|_| s.admit(A).expect("no cap")).collect();
        assert_eq!(s.held(A), 0);
        assert!(held.iter().all(|a| !a.evicted));
    }
}
