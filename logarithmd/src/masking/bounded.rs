//! A map of bounded size for the caches of masking: two generations, the older dropped
//! whole when the newer is full, so what was used recently stays and memory is bounded.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct Bounded<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    /// Entries per generation.
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Bounded<K, V> {
    /// At most `2 * max` entries.
    pub fn new(max: usize) -> Bounded<K, V> {
        Bounded {
            current: HashMap::new(),
            previous: HashMap::new(),
            max: max.max(1),
        }
    }

    /// The value, refreshed into the current generation when found in the older one.
    pub fn get(&mut self, k: &K) -> Option<V> {
        if let Some(v) = self.current.get(k) {
            return Some(v.clone());
        }
        let v = self.previous.remove(k)?;
        self.insert(k.clone(), v.clone());
        Some(v)
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.current.len() >= self.max && !self.current.contains_key(&k) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(k, v);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_two_generations_and_keeps_what_is_used() {
        let mut m = Bounded::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(3, "c"); // 1 and 2 become the older generation
        assert_eq!(m.get(&1), Some("a")); // refreshed
        m.insert(4, "d"); // full again: {3, 1} older, 2 dropped
        assert_eq!(m.get(&2), None);
        assert_eq!(m.get(&1), Some("a"));
        assert!(m.len() <= 4);
    }
}
