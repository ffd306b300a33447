//! Replica leases: several engines (logarithmd replicas) on one store behave as one. Each
//! flow run is advanced by exactly one of them at a time, and a run whose engine died is
//! taken over by another.
//!
//! How:
//! - Every run names its owner ([`crate::Run::owner`], a replica id). Only the owner keeps
//!   it in memory, starts and stops its jobs, applies its verdicts and timers.
//! - Every replica keeps a heartbeat in the store ([`crate::RunStore::beat`]): a record
//!   whose version it bumps every `lease_ttl / 5`.
//! - A replica counts another as dead when that one's heartbeat has not changed for
//!   `lease_ttl`, measured on the observer's own monotonic clock since it first saw the
//!   version ([`Liveness`]), or when the heartbeat was retired. No clocks are compared
//!   across machines; this is how client-go's leader election judges a lease
//!   (`observedTime`), not by the holder's timestamp.
//! - Every `lease_ttl / 5` a replica lists the active runs and claims those whose owner is
//!   dead (or unset): a compare-and-set of the run with itself as owner. Of several
//!   claimers one wins; the others get a conflict and leave the run alone. The winner
//!   reconciles the run as after a restart (jobs saved as starting are started again; the
//!   runner finds their container by name rather than making a second one).
//! - A request (approve, reject, cancel) that reaches a replica not owning the run claims
//!   it there (the same compare-and-set), so any replica can serve the API.
//! - Fencing: every save of a run is a compare-and-set, and a transition's commands are
//!   carried out only after its save. A replica that stalled past its lease (or lost the
//!   run to a request elsewhere) finds its next save refused, drops the run, and carries
//!   out nothing of that transition. A replica whose own heartbeat was retired by another
//!   drops every run it holds and registers again.
//! - A replica that shuts down retires its heartbeat, so its runs are taken over at once
//!   instead of after `lease_ttl`.
//!
//! Anything else that must happen once across replicas (a cron trigger that fires once)
//! can reuse this: a stored record with an owner field, written by compare-and-set, claimed
//! from owners that [`Liveness::is_live`] says are dead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A replica's heartbeat as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub replica: String,
    /// Bumped by every beat.
    pub version: u64,
}

/// A fresh replica id: the host's name (the Pod's name on Kubernetes) and a random suffix,
/// so two processes on one host never share one.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "engine".to_owned());
    let host: String = host.chars().take(200).collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// One replica's view of the others' heartbeats: which are alive.
#[derive(Debug)]
pub struct Liveness {
    ttl: Duration,
    /// Replica → (version last seen, when this replica first saw that version).
    seen: HashMap<String, (u64, Instant)>,
}

impl Liveness {
    pub fn new(ttl: Duration) -> Liveness {
        Liveness {
            ttl,
            seen: HashMap::new(),
        }
    }

    /// Takes in the heartbeats as listed at `now`; replicas not listed are forgotten (their
    /// heartbeat was retired).
    pub fn observe(&mut self, beats: &[Heartbeat], now: Instant) {
        let mut next = HashMap::with_capacity(beats.len());
        for b in beats {
            let since = match self.seen.get(&b.replica) {
                Some((v, t)) if *v == b.version => *t,
                _ => now,
            };
            next.insert(b.replica.clone(), (b.version, since));
        }
        self.seen = next;
    }

    /// Whether `replica` beat within the last `ttl` as far as this replica saw. A replica
    /// never seen (retired, or not yet registered when last listed) is not alive.
    pub fn is_live(&self, replica: &str, now: Instant) -> bool {
        self.seen
            .get(replica)
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) < self.ttl)
    }

    /// Replicas seen whose heartbeat stood still for `ttl`: dead, to be retired.
    pub fn dead(&self, now: Instant) -> Vec<(String, u64)> {
        self.seen
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= self.ttl)
            .map(|(r, (v, _))| (r.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(r: &str, v: u64) -> Heartbeat {
        Heartbeat {
            replica: r.into(),
            version: v,
        }
    }

    #[test]
    fn a_heartbeat_that_stands_still_for_the_ttl_is_dead() {
        let ttl = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut l = Liveness::new(ttl);
        l.observe(&[hb("a", 1), hb("b", 7)], t0);
        assert!(l.is_live("a", t0) && l.is_live("b", t0));
        assert!(!l.is_live("c", t0), "never seen");
        // a beats, b does not.
        l.observe(&[hb("a", 2), hb("b", 7)], t0 + Duration::from_secs(6));
        let t = t0 + Duration::from_secs(11);
        l.observe(&[hb("a", 2), hb("b", 7)], t);
        assert!(l.is_live("a", t), "a's version changed at 6s");
        assert!(!l.is_live("b", t), "b stood still since 0s");
        assert_eq!(l.dead(t), vec![("b".to_owned(), 7)]);
        // Retired heartbeats are forgotten.
        l.observe(&[hb("a", 3)], t);
        assert!(!l.is_live("b", t));
        assert!(l.dead(t).is_empty());
    }
}
