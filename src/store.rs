//! Durable cursors: where a client keeps each subscription's position, so
//! that a new process resumes where the last one left off.
//!
//! With a store configured ([`ClientBuilder::cursor_store`](crate::ClientBuilder::cursor_store)),
//! [`Client::subscribe`](crate::Client::subscribe) starts after the stored
//! cursor when there is one, and the cursor is saved each time the
//! subscription hands the application an event (or a reset's new position),
//! before the application sees it. An event handed out is therefore never
//! handed out again after a restart, and none after it is skipped.
//!
//! In the browser the npm package keeps cursors in `localStorage` itself
//! (its `cursors` option); mobile apps implement the FFI crate's
//! `CursorStore` callback interface.

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a cursor could not be loaded or saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("cursor store I/O failed: {0}")]
    Io(String),
    /// What the store holds for the channel is not an event id.
    #[error("the stored cursor for '{channel}' is not an event id: '{found}'")]
    Corrupt {
        /// The channel.
        channel: String,
        /// What was found (at most 64 bytes of it).
        found: String,
    },
}

/// Keeps one cursor (an event id) per channel.
///
/// `save` is called on the application's task each time a subscription hands
/// out an event, so it should be quick; `load` once per subscribe. A store
/// serves one client: two clients on different servers need two stores.
pub trait CursorStore: Send + Sync + 'static {
    /// The cursor saved for `channel`, if any.
    fn load(&self, channel: &str) -> Result<Option<String>, StoreError>;
    /// Replaces the cursor of `channel`.
    fn save(&self, channel: &str, cursor: &str) -> Result<(), StoreError>;
}

impl std::fmt::Debug for dyn CursorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorStore")
    }
}

/// Cursors in memory: they outlive a subscription (a new `subscribe` to the
/// same channel resumes) but not the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    cursors: Mutex<HashMap<String, String>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CursorStore for MemoryStore {
    fn load(&self, channel: &str) -> Result<Option<String>, StoreError> {
        Ok(self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(channel).cloned())
    }

    fn save(&self, channel: &str, cursor: &str) -> Result<(), StoreError> {
        self.cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(channel.to_owned(), cursor.to_owned());
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use file::FileStore;

#[cfg(not(target_arch = "wasm32"))]
mod file {
    use std::fs;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};

    use super::{CursorStore, StoreError};

    /// Cursors in a directory, one small file per channel (`<channel>.cursor`;
    /// channel names are safe file names).
    ///
    /// Each save writes a temporary file and renames it over the old one, so
    /// a crash in the middle of a save leaves the old cursor or the new one,
    /// never a torn file. By default the data is not flushed to the disk on
    /// each save: that survives the process crashing or being killed, not
    /// the machine losing power; [`FileStore::sync`] adds an `fsync` per save
    /// (and so per event) for that.
    #[derive(Debug, Clone)]
    pub struct FileStore {
        dir: PathBuf,
        sync: bool,
    }

    fn io(e: io::Error) -> StoreError {
        StoreError::Io(e.to_string())
    }

    impl FileStore {
        /// A store in `dir`, created if missing.
        pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
            fs::create_dir_all(dir.as_ref())?;
            Ok(Self { dir: dir.as_ref().to_owned(), sync: false })
        }

        /// Also flushes each save to the disk (`fsync` of the file and the
        /// directory), to survive power loss.
        #[must_use]
        pub fn sync(mut self, on: bool) -> Self {
            self.sync = on;
            self
        }

        fn path(&self, channel: &str) -> PathBuf {
            self.dir.join(format!("{channel}.cursor"))
        }
    }

    impl CursorStore for FileStore {
        fn load(&self, channel: &str) -> Result<Option<String>, StoreError> {
            let text = match fs::read_to_string(self.path(channel)) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            let cursor = text.trim_end();
            if cursor.parse::<crate::protocol::EventId>().is_err() {
                let found = cursor.chars().take(64).collect();
                return Err(StoreError::Corrupt { channel: channel.to_owned(), found });
            }
            Ok(Some(cursor.to_owned()))
        }

        fn save(&self, channel: &str, cursor: &str) -> Result<(), StoreError> {
            // A hidden name, never taken for a cursor file by `load`.
            let tmp = self.dir.join(format!(".{channel}.cursor.tmp"));
            let mut f = fs::File::create(&tmp).map_err(io)?;
            f.write_all(cursor.as_bytes()).map_err(io)?;
            if self.sync {
                f.sync_all().map_err(io)?;
            }
            drop(f);
            fs::rename(&tmp, self.path(channel)).map_err(io)?;
            if self.sync {
                fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
            Ok(())
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("resub-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_file_store_keeps_the_last_cursor_per_channel() {
        let dir = temp_dir("keep");
        let store = FileStore::new(&dir).unwrap();
        assert_eq!(store.load("a").unwrap(), None);
        store.save("a", "ep-1").unwrap();
        store.save("a", "ep-2").unwrap();
        store.save("b.c:d-e", "ep-9").unwrap();
        // Another store on the same directory (a new process) sees them.
        let again = FileStore::new(&dir).unwrap().sync(true);
        assert_eq!(again.load("a").unwrap().as_deref(), Some("ep-2"));
        assert_eq!(again.load("b.c:d-e").unwrap().as_deref(), Some("ep-9"));
        again.save("a", "ep-3").unwrap();
        assert_eq!(store.load("a").unwrap().as_deref(), Some("ep-3"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_save_cut_short_leaves_the_previous_cursor() {
        let dir = temp_dir("torn");
        let store = FileStore::new(&dir).unwrap();
        store.save("a", "ep-41").unwrap();
        // A crash after the temporary file was (partly) written, before the
        // rename: what `save` would have left behind.
        std::fs::write(dir.join(".a.cursor.tmp"), "ep-4").unwrap();
        assert_eq!(store.load("a").unwrap().as_deref(), Some("ep-41"));
        // The next save replaces the leftover.
        store.save("a", "ep-42").unwrap();
        assert_eq!(store.load("a").unwrap().as_deref(), Some("ep-42"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_cursor_file_is_a_typed_error() {
        let dir = temp_dir("corrupt");
        let store = FileStore::new(&dir).unwrap();
        std::fs::write(dir.join("a.cursor"), "not an id!").unwrap();
        let err = store.load("a").unwrap_err();
        assert_eq!(err, StoreError::Corrupt { channel: "a".into(), found: "not an id!".into() });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_store_that_cannot_write_says_so() {
        let dir = temp_dir("readonly");
        let store = FileStore::new(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(store.save("a", "ep-1"), Err(StoreError::Io(_))));
    }

    #[test]
    fn the_memory_store_keeps_cursors_for_the_process() {
        let store = MemoryStore::new();
        assert_eq!(store.load("a").unwrap(), None);
        store.save("a", "ep-1").unwrap();
        assert_eq!(store.load("a").unwrap().as_deref(), Some("ep-1"));
    }
}
