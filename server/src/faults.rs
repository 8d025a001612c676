//! Fault switches, for testing clients against a server that misbehaves
//! the way networks and deployments do (feature `fault-injection`, used by
//! resub-fixture; not compiled into the deployed server).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::ServerError;
use crate::state::{Shared, Transport};

/// The fault switches of a [`crate::Hub`], from [`crate::Hub::faults`].
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// When the hub was created.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Closes every connection abruptly: WebSocket connections without a
    /// close frame, SSE streams without the end of the chunked body, held
    /// polls without an answer. Returns how many were dropped.
    pub fn drop_all(&self) -> usize {
        self.shared.drop_all()
    }

    /// Makes every open connection silent until the client goes away.
    /// Returns how many were stalled.
    pub fn stall_all(&self) -> usize {
        self.shared.stall_all()
    }

    /// Allows or refuses (`403`) handshakes on a transport.
    pub fn set_enabled(&self, transport: Transport, on: bool) {
        self.shared.set_enabled(transport, on);
    }

    /// Whether handshakes on a transport are allowed.
    pub fn enabled(&self, transport: Transport) -> bool {
        self.shared.enabled(transport)
    }

    /// Answers the next `count` handshakes (every one, with `None`) with
    /// `503` and `Retry-After: retry_after_secs`.
    pub fn set_unavailable(&self, retry_after_secs: u64, count: Option<u32>) {
        self.shared.set_unavailable(retry_after_secs, count);
    }

    /// Stops answering handshakes with `503`.
    pub fn clear_unavailable(&self) {
        self.shared.clear_unavailable();
    }

    /// Applies the next `count` publishes without answering them (the
    /// connection or request is dropped instead).
    pub fn set_drop_acks(&self, count: u32) {
        self.shared.set_drop_acks(count);
    }

    /// Pads the next `count` answers to HTTP publishes (`publish`) or polls
    /// to `bytes` bytes, streamed with no `Content-Length`.
    pub fn set_oversize(&self, publish: bool, count: u32, bytes: usize) {
        self.shared.set_oversize(publish, count, bytes);
    }

    /// Accepts handshakes only with one of these bearer tokens (`None`: any),
    /// answering the others `401`.
    pub fn set_tokens(&self, tokens: Option<HashSet<String>>) {
        self.shared.set_tokens(tokens);
    }

    /// Answers every handshake `401` while `on`.
    pub fn set_reject_auth(&self, on: bool) {
        self.shared.set_reject_auth(on);
    }

    /// Keeps only the newest `keep` events of the channel's history (on
    /// Redis, for every node). Returns the oldest retained id.
    pub async fn truncate(&self, channel: &str, keep: usize) -> Result<Option<String>, ServerError> {
        self.shared.truncate(channel, keep).await
    }

    /// [`Faults::truncate`] on a node without Redis.
    pub fn truncate_local(&self, channel: &str, keep: usize) -> Result<Option<String>, ServerError> {
        self.shared.truncate_local(channel, keep)
    }

    /// Starts a new epoch for the channel: history is cleared, live
    /// subscribers get a `reset` with reason `epoch_changed`. Returns the new
    /// head id.
    pub async fn new_epoch(&self, channel: &str) -> Result<String, ServerError> {
        self.shared.new_epoch(channel).await
    }

    /// [`Faults::new_epoch`] on a node without Redis.
    pub fn new_epoch_local(&self, channel: &str) -> Result<String, ServerError> {
        self.shared.new_epoch_local(channel)
    }

    /// The channel's head on a node without Redis.
    pub fn head_local(&self, channel: &str) -> Result<String, ServerError> {
        self.shared.head_local(channel)
    }

    /// Publishes on a node without Redis, synchronously.
    pub fn publish_local(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, ServerError> {
        self.shared.publish_local(channel, key, event, data)
    }

    /// Whether the hub keeps its channels in Redis.
    pub fn clustered(&self) -> bool {
        self.shared.store.is_some()
    }
}
