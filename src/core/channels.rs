//! A small map keyed by channel name: a sorted `Vec`.
//!
//! A client holds a handful of subscriptions, so a sorted vector is as fast
//! as a tree or a hash map, iterates in the same (sorted) order a `BTreeMap`
//! does, and compiles to far less code, which matters in the browser build.

/// Values by channel name, iterated in key order.
#[derive(Debug, Clone)]
pub(crate) struct ChannelMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for ChannelMap<V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<V> ChannelMap<V> {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Whether `key` has a value.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, to change it.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Sets the value of `key`, returning the one it replaces.
    pub(crate) fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                // Doubling from one entry rather than from four: most
                // clients hold one or two subscriptions for hours.
                let cap = self.entries.capacity();
                if self.entries.len() == cap {
                    self.entries.reserve_exact(cap.max(1));
                }
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// Keys and values, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in key order, to change them.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// Consumes the map into its keys, in order.
    pub(crate) fn into_keys(self) -> impl Iterator<Item = String> {
        self.entries.into_iter().map(|(k, _)| k)
    }
}
