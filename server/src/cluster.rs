//! The work of a node whose channels live in a [`Storage`]: following the
//! storage's changes into this node's mirrors, and keeping this node's
//! presence there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::state::{Shared, unix_ms};
use crate::storage::{PAGE, PresenceMember};

/// The longest pause between attempts to reach the storage again.
const MAX_RETRY: Duration = Duration::from_secs(2);

fn retry_delay(failures: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.saturating_pow(failures.min(6))).min(MAX_RETRY)
}

/// Follows every mirrored channel's stream and presence log with
/// [`Storage::changes`](crate::Storage::changes), applying what arrives to the
/// mirrors (and so delivering it to this node's subscribers). Runs until the
/// node stops.
pub(crate) async fn follow(shared: Arc<Shared>) {
    let Some(store) = shared.store.clone() else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let follow = shared.follow_list();
        if follow.is_empty() {
            shared.follow_wake.notified().await;
            continue;
        }
        let reply = tokio::select! {
            reply = store.changes(&follow, PAGE) => reply,
            // A channel was mirrored for the first time: follow it too, now.
            () = shared.follow_wake.notified() => continue,
        };
        let changes = match reply {
            Ok(changes) => changes,
            Err(err) => {
                warn!(%err, "following channels failed; retrying");
                tokio::time::sleep(retry_delay(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        for change in changes {
            let channel = &change.channel;
            if let Some(last) = &change.presence_cursor {
                shared.follow_presence(channel, &change.presence, last);
            }
            if change.items.is_empty() {
                continue;
            }
            if !shared.follow_events(channel, &change.items) {
                debug!(channel, "stream does not follow the mirror; fetching a snapshot");
                if let Err(err) = shared.sync_channel(channel).await {
                    warn!(channel, %err, "cannot resync a channel");
                }
            }
        }
    }
}

/// Keeps this node's presence in the storage: adds members as they
/// subscribe, removes them as they leave, refreshes their expiry every
/// quarter of `presence_ttl` (each refresh holds for half of it), and every
/// quarter of it removes the members of the channels it mirrors whose node
/// stopped refreshing them. A crashed node's members are thus gone within
/// `presence_ttl` of its last refresh.
pub(crate) async fn keep_presence(shared: Arc<Shared>) {
    let Some(store) = shared.store.clone() else {
        return;
    };
    let ttl = shared.cfg.presence_ttl.max(Duration::from_millis(100));
    let quarter = ttl / 4;
    let hold = u64::try_from((ttl / 2).as_millis()).unwrap_or(u64::MAX);
    let mut ticker = tokio::time::interval(Duration::from_millis(100).min(ttl / 8));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced: HashMap<(String, String), String> = HashMap::new();
    let mut last_refresh = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        ticker.tick().await;
        let local = shared.local_presence();
        let refresh = last_refresh.elapsed() >= quarter;
        if refresh {
            last_refresh = Instant::now();
        }
        let expires_ms = unix_ms().saturating_add(hold);
        for ((channel, id), data) in &local {
            let key = (channel.clone(), id.clone());
            if !refresh && synced.get(&key) == Some(data) {
                continue;
            }
            let member = PresenceMember { client_id: id, data, node: &shared.node, expires_ms };
            match store.presence_join(channel, member).await {
                Ok(()) => {
                    synced.insert(key, data.clone());
                }
                Err(err) => warn!(channel, client_id = %id, %err, "cannot record presence"),
            }
        }
        let gone: Vec<(String, String)> = synced.keys().filter(|k| !local.contains_key(*k)).cloned().collect();
        for key in gone {
            match store.presence_leave(&key.0, &key.1, &shared.node).await {
                Ok(()) => {
                    synced.remove(&key);
                }
                Err(err) => warn!(channel = %key.0, client_id = %key.1, %err, "cannot record a leave"),
            }
        }
        if last_sweep.elapsed() >= quarter {
            last_sweep = Instant::now();
            for channel in shared.mirrored() {
                if let Err(err) = store.presence(&channel, unix_ms()).await {
                    warn!(channel, %err, "cannot sweep presence");
                }
            }
        }
    }
}
