//! The few most recently used values by key: what a backend keeps of work recorded once
//! per step shape and replayed (Vulkan command buffers, CUDA graphs).

/// At most `capacity` values, the least recently used first out.
#[derive(Debug)]
pub struct Lru<K, V> {
    /// Least recently used first.
    entries: Vec<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq, V> Lru<K, V> {
    pub fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            entries: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&mut V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(i);
        self.entries.push(entry);
        self.entries.last_mut().map(|(_, v)| v)
    }

    /// Keep `value` as `key`'s, the most recently used; returns the value it pushes out
    /// (the least recently used, when full), for the caller to release.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let evicted = if self.entries.len() >= self.capacity {
            Some(self.entries.remove(0).1)
        } else {
            None
        };
        self.entries.push((key, value));
        evicted
    }

    /// Every value, for the caller to release; the cache is empty after.
    pub fn drain(&mut self) -> Vec<V> {
        self.entries.drain(..).map(|(_, v)| v).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut lru = Lru::new(2);
        assert_eq!(lru.insert(1, "a"), None);
        assert_eq!(lru.insert(2, "b"), None);
        assert_eq!(lru.get(&1), Some(&mut "a"));
        assert_eq!(lru.insert(3, "c"), Some("b"));
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(lru.drain(), ["a", "c"]);
        assert!(lru.is_empty());
    }
}
