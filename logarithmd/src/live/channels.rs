//! A bounded registry of keyed broadcast channels: one channel per followed job or run,
//! created by its first follower and removed with its last, so publishing to something
//! nobody follows costs one map lookup and no copy.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::broadcast;

/// One key's channel, shared by its followers (and its catch-up watcher, weakly).
pub struct Channel<M> {
    tx: broadcast::Sender<Arc<M>>,
    /// The highest position (a job's seq, a run's version) published or seen stored, so
    /// the watcher reads only what this process did not publish itself.
    mark: AtomicU64,
}

impl<M> Channel<M> {
    /// See `mark`.
    pub fn mark(&self) -> u64 {
        self.mark.load(Ordering::Acquire)
    }

    /// Raises the mark to `to` (never lowers it).
    pub fn raise_mark(&self, to: u64) {
        self.mark.fetch_max(to, Ordering::AcqRel);
    }

    /// Publishes to this channel's followers.
    pub fn send(&self, msg: Arc<M>) {
        // An error only means that every follower left in the meantime.
        let _ = self.tx.send(msg);
    }
}

/// Why a follower could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many live followers ({0}); retry later")]
pub struct Full(pub usize);

/// Channels by key, with a cap on the followers of all keys together.
pub struct Channels<K, M> {
    inner: Mutex<Inner<K, M>>,
    capacity: usize,
    max_followers: usize,
}

struct Inner<K, M> {
    by_key: HashMap<K, Entry<M>>,
    followers: usize,
}

struct Entry<M> {
    channel: Arc<Channel<M>>,
    followers: usize,
}

/// A new membership, and the channel's weak handle when this join created it.
pub type Joined<K, M> = (Membership<K, M>, Option<Weak<Channel<M>>>);

/// A follower's membership: its receiver, and on drop it leaves (the last one out removes
/// the channel, which also stops its watcher).
pub struct Membership<K: Eq + Hash + Clone, M> {
    pub rx: broadcast::Receiver<Arc<M>>,
    key: K,
    registry: Arc<Channels<K, M>>,
}

impl<K: Eq + Hash + Clone, M> Drop for Membership<K, M> {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.followers = inner.followers.saturating_sub(1);
        if let Some(e) = inner.by_key.get_mut(&self.key) {
            e.followers = e.followers.saturating_sub(1);
            if e.followers == 0 {
                inner.by_key.remove(&self.key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone, M> Channels<K, M> {
    /// `capacity`: messages a follower may fall behind before it is told it lagged.
    pub fn new(capacity: usize, max_followers: usize) -> Arc<Channels<K, M>> {
        Arc::new(Channels {
            inner: Mutex::new(Inner {
                by_key: HashMap::new(),
                followers: 0,
            }),
            capacity: capacity.max(1),
            max_followers,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, M>> {
        // The map stays consistent even if a holder panicked: every change is one step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins `key`'s channel, creating it if needed. The bool says whether it was created
    /// (the caller then starts its watcher with the weak handle).
    pub fn join(self: &Arc<Self>, key: &K) -> Result<Joined<K, M>, Full> {
        let mut inner = self.lock();
        if inner.followers >= self.max_followers {
            return Err(Full(self.max_followers));
        }
        inner.followers += 1;
        let mut created = None;
        let entry = inner.by_key.entry(key.clone()).or_insert_with(|| {
            let (tx, _) = broadcast::channel(self.capacity);
            let channel = Arc::new(Channel {
                tx,
                mark: AtomicU64::new(0),
            });
            created = Some(Arc::downgrade(&channel));
            Entry {
                channel,
                followers: 0,
            }
        });
        entry.followers += 1;
        let rx = entry.channel.tx.subscribe();
        Ok((
            Membership {
                rx,
                key: key.clone(),
                registry: self.clone(),
            },
            created,
        ))
    }

    /// The channel of `key`, if anyone follows it.
    pub fn get(&self, key: &K) -> Option<Arc<Channel<M>>> {
        self.lock().by_key.get(key).map(|e| e.channel.clone())
    }

    /// Whether anyone follows anything (publishers skip all work when not).
    pub fn is_idle(&self) -> bool {
        self.lock().followers == 0
    }

    /// Followers of all keys.
    pub fn followers(&self) -> usize {
        self.lock().followers
    }

    /// Keys followed now.
    pub fn keys(&self) -> usize {
        self.lock().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channels_live_as_long_as_their_followers() {
        let reg: Arc<Channels<u64, u32>> = Channels::new(4, 3);
        assert!(reg.get(&1).is_none());
        let (mut a, created) = reg.join(&1).unwrap();
        assert!(created.is_some());
        let (mut b, again) = reg.join(&1).unwrap();
        assert!(again.is_none());
        let (_c, _) = reg.join(&2).unwrap();
        assert_eq!(reg.join(&3).err(), Some(Full(3)));
        reg.get(&1).unwrap().send(Arc::new(7));
        assert_eq!(*a.rx.recv().await.unwrap(), 7);
        assert_eq!(*b.rx.recv().await.unwrap(), 7);
        assert_eq!((reg.followers(), reg.keys()), (3, 2));
        drop(a);
        assert!(reg.get(&1).is_some());
        drop(b);
        assert!(reg.get(&1).is_none());
        let weak = created.unwrap();
        assert!(
            weak.upgrade().is_none(),
            "the watcher's handle dies with the channel"
        );
        assert_eq!((reg.followers(), reg.keys()), (1, 1));
    }
}
