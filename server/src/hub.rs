//! [`Hub`]: the channels of one server node, shared by its routes and the
//! application's own code.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::Shared;
use crate::{Config, RedisStorage, ServerError, Stats, Storage, cluster};

/// The channels of a server node: history, subscribers, presence, and (with
/// [`Config::storage`] or [`Config::redis`]) the link to the other nodes.
///
/// Cheap to clone; every clone is the same hub. [`crate::router`] serves it
/// over HTTP; the application publishes with [`Hub::publish`]. Its
/// background work (following the storage, presence upkeep, long-poll expiry)
/// stops when the last clone, and the last router made from one, is gone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("node", &self.inner.shared.node).finish_non_exhaustive()
    }
}

/// How often held long polls are checked for clients that stopped polling.
const POLL_EXPIRY_TICK: Duration = Duration::from_millis(250);

impl Hub {
    /// Creates a hub with `config`; with [`Config::redis`], connects to
    /// Redis first (failing with [`ServerError::Storage`] when it cannot be
    /// reached, or when [`Config::storage`] is set too). Must be called
    /// within a Tokio runtime.
    pub async fn new(config: Config) -> Result<Hub, ServerError> {
        let store: Option<Arc<dyn Storage>> = match (&config.storage, &config.redis) {
            (Some(_), Some(_)) => {
                return Err(ServerError::Storage("Config::storage and Config::redis are both set: choose one".into()));
            }
            (Some(storage), None) => Some(Arc::clone(storage)),
            (None, Some(redis)) => Some(Arc::new(RedisStorage::connect(redis).await?)),
            (None, None) => None,
        };
        let shared = Arc::new(Shared::new(config, store));
        let mut tasks = Vec::new();
        let expiring = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            // Long-polling clients have no connection to close: they leave
            // when they stop polling.
            let mut tick = tokio::time::interval(POLL_EXPIRY_TICK);
            loop {
                tick.tick().await;
                expiring.expire_polls();
            }
        }));
        if shared.store.is_some() {
            tasks.push(tokio::spawn(cluster::follow(Arc::clone(&shared))));
            tasks.push(tokio::spawn(cluster::keep_presence(Arc::clone(&shared))));
        }
        Ok(Hub { inner: Arc::new(Inner { shared, tasks }) })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The hub's settings.
    pub fn config(&self) -> &Config {
        &self.inner.shared.cfg
    }

    /// Publishes `data` on `channel` (with a storage: to every node sharing it).
    /// Returns the new event's id.
    pub async fn publish(&self, channel: &str, data: &str) -> Result<String, ServerError> {
        self.inner.shared.publish(channel, None, None, data).await
    }

    /// Publishes with an event type and an idempotency key, as
    /// `POST /publish/{channel}?event=TYPE` with `Idempotency-Key` does: a key
    /// already seen on the channel returns the first id and publishes
    /// nothing.
    pub async fn publish_with(
        &self,
        channel: &str,
        event: Option<&str>,
        key: Option<&str>,
        data: &str,
    ) -> Result<String, ServerError> {
        self.inner.shared.publish(channel, key, event, data).await
    }

    /// Who is present on `channel` (client id and presence data), sorted by
    /// client id: with a storage over every node sharing it, else on this node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<(String, String)>, ServerError> {
        self.inner.shared.presence(channel).await
    }

    /// The id of the channel's newest event (`<epoch>-0` when the epoch has
    /// none); with a storage, as the storage has it now.
    pub async fn head(&self, channel: &str) -> Result<String, ServerError> {
        self.inner.shared.head(channel).await
    }

    /// A snapshot of the hub's counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.stats()
    }

    /// Whether the hub takes new connections: not draining, and (with
    /// a storage) the storage answers. What `/readyz` reports.
    pub async fn ready(&self) -> bool {
        let shared = &self.inner.shared;
        if !shared.accepting() {
            return false;
        }
        match &shared.store {
            None => true,
            Some(store) => matches!(tokio::time::timeout(Duration::from_secs(1), store.ping()).await, Ok(Ok(()))),
        }
    }

    /// Starts a graceful shutdown: every open connection is told to
    /// reconnect at once, elsewhere if the client can (WebSocket close code
    /// 1012; a `restarting` error frame ending an SSE stream or a held poll's
    /// answer), and so is every new handshake; [`Hub::ready`] turns false.
    /// Returns how many were told.
    pub fn drain(&self) -> usize {
        self.inner.shared.drain()
    }

    /// Completes when no connection is open.
    pub async fn drained(&self) {
        self.inner.shared.drained().await;
    }

    /// Closes every connection at once, without telling the clients (they
    /// reconnect with backoff), and refuses new ones.
    pub fn close(&self) {
        self.inner.shared.close();
    }

    /// The fault switches of this hub.
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> crate::Faults {
        crate::Faults::new(Arc::clone(&self.inner.shared))
    }
}
