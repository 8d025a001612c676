//! A seeded fault schedule run by the fixture while it publishes: the
//! server side of the chaos tests. The same seed and plan give the same
//! sequence of publishes and faults (their timing against the client's
//! reconnects varies from run to run).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use resub_server::{Faults, Hub, Transport};

use crate::FixtureError;

/// The most events one chaos run may publish.
pub const CHAOS_MAX_EVENTS: u64 = 10_000_000;
/// The most channels one chaos run may publish on.
pub const CHAOS_MAX_CHANNELS: usize = 64;

/// One kind of fault a chaos run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultKind {
    /// Every connection is closed abruptly (`/control/drop`).
    Drop,
    /// Every connection goes silent (`/control/stall`).
    Stall,
    /// WebSocket upgrades are refused with `403` for 10–100 ms.
    RefuseWebsocket,
    /// SSE streams are refused with `403` for 10–100 ms.
    RefuseSse,
    /// Long polls are refused with `403` for 10–100 ms.
    RefusePoll,
    /// The next 1–3 handshakes are answered `503` with `Retry-After: 0`.
    Unavailable,
    /// One channel's history keeps only its newest 0–500 events.
    Truncate,
    /// One channel starts a new epoch.
    Epoch,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Drop,
        FaultKind::Stall,
        FaultKind::RefuseWebsocket,
        FaultKind::RefuseSse,
        FaultKind::RefusePoll,
        FaultKind::Unavailable,
        FaultKind::Truncate,
        FaultKind::Epoch,
    ];
}

/// What a chaos run publishes and injects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosPlan {
    /// Seeds the schedule: which event each fault follows, its kind, its
    /// channel and its parameters.
    pub seed: u64,
    /// Events to publish, spread round-robin over `channels`; event `n` of a
    /// channel (from 1) has the data `"<channel>:<n>"`.
    pub events: u64,
    /// Faults to inject, each after a publish chosen at random.
    pub faults: u64,
    /// The channels (valid names, 1 to [`CHAOS_MAX_CHANNELS`]).
    pub channels: Vec<String>,
    /// Publishes per second.
    pub rate: u32,
    /// The kinds to draw from, with equal weight (not empty).
    pub kinds: Vec<FaultKind>,
}

/// One fault a chaos run injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// How many events had been published when it was injected.
    pub after_event: u64,
    /// The kind.
    pub kind: FaultKind,
    /// The channel, for `truncate` and `epoch`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<String>,
}

/// Where a chaos run is: complete once `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosReport {
    /// The plan.
    pub plan: ChaosPlan,
    /// Whether every event was published and every fault injected (and every
    /// refusal lifted).
    pub done: bool,
    /// Events published so far.
    pub published: u64,
    /// Faults injected so far, in order.
    pub faults: Vec<FaultRecord>,
    /// Per channel: its head id and the `n` of its last event (once done,
    /// what a subscriber must end on).
    pub channels: BTreeMap<String, ChannelEnd>,
    /// Milliseconds from the start to the last publish or fault.
    pub duration_ms: u64,
}

/// A channel's position in a chaos run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEnd {
    /// The id of its newest event (`<epoch>-0` when the epoch has none).
    pub head: String,
    /// How many events were published on it.
    pub published: u64,
}

impl ChaosPlan {
    /// Checks the plan's bounds.
    pub fn validate(&self) -> Result<(), FixtureError> {
        let bad = |why: String| Err(FixtureError::InvalidPlan(why));
        if self.events == 0 || self.events > CHAOS_MAX_EVENTS {
            return bad(format!("events must be 1..={CHAOS_MAX_EVENTS}"));
        }
        if self.faults > self.events {
            return bad("faults must not exceed events".into());
        }
        if self.channels.is_empty() || self.channels.len() > CHAOS_MAX_CHANNELS {
            return bad(format!("channels must be 1..={CHAOS_MAX_CHANNELS}"));
        }
        for ch in &self.channels {
            resub::protocol::validate_channel(ch).map_err(|_| FixtureError::InvalidChannel(ch.clone()))?;
        }
        if self.rate == 0 {
            return bad("rate must be at least 1".into());
        }
        if self.kinds.is_empty() && self.faults > 0 {
            return bad("kinds must not be empty".into());
        }
        Ok(())
    }
}

/// The shared record of the current (or last) chaos run.
#[derive(Default)]
pub(crate) struct ChaosState {
    report: Mutex<Option<ChaosReport>>,
    done: Mutex<Option<watch::Receiver<bool>>>,
}

impl ChaosState {
    pub(crate) fn report(&self) -> Option<ChaosReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ChaosReport)) {
        if let Some(r) = self.report.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            f(r);
        }
    }

    /// Completes when the current run is done (at once if there is none).
    pub(crate) async fn finished(&self) {
        let rx = self.done.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

/// Starts `plan` on a task; refused while another run is going.
pub(crate) fn start(hub: &Hub, faults: &Faults, chaos: &Arc<ChaosState>, plan: ChaosPlan) -> Result<(), FixtureError> {
    plan.validate()?;
    {
        let mut report = chaos.report.lock().unwrap_or_else(PoisonError::into_inner);
        if report.as_ref().is_some_and(|r| !r.done) {
            return Err(FixtureError::Busy);
        }
        *report = Some(ChaosReport {
            plan: plan.clone(),
            done: false,
            published: 0,
            faults: Vec::new(),
            channels: BTreeMap::new(),
            duration_ms: 0,
        });
    }
    let (tx, rx) = watch::channel(false);
    *chaos.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(rx);
    let (hub, faults, chaos) = (hub.clone(), faults.clone(), Arc::clone(chaos));
    tokio::spawn(async move {
        run(&hub, &faults, &chaos, plan).await;
        let _ = tx.send(true);
    });
    Ok(())
}

/// Report progress every this many publishes.
const PROGRESS_EVERY: u64 = 256;

async fn run(hub: &Hub, switches: &Faults, chaos: &ChaosState, plan: ChaosPlan) {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    // After which publish each fault comes, in order.
    let mut at: Vec<u64> = (0..plan.faults).map(|_| rng.random_range(1..=plan.events)).collect();
    at.sort_unstable();
    let mut next_fault = 0usize;
    let mut counts = vec![0u64; plan.channels.len()];
    // Refusals to lift: when, and which transport.
    let mut lift: Vec<(Instant, Transport)> = Vec::new();
    let start = Instant::now();
    tracing::info!(seed = plan.seed, events = plan.events, faults = plan.faults, "chaos run started");
    let mut faults = Vec::new();
    for i in 1..=plan.events {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(plan.rate));
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            tokio::time::sleep_until(due.into()).await;
        } else if i % PROGRESS_EVERY == 0 {
            // Running behind (or unpaced): let the connections send.
            tokio::task::yield_now().await;
        }
        let k = ((i - 1) % plan.channels.len() as u64) as usize;
        counts[k] += 1;
        let channel = &plan.channels[k];
        if let Err(err) = hub.publish(channel, &format!("{channel}:{}", counts[k])).await {
            tracing::error!(%err, "chaos publish failed");
        }
        let now = Instant::now();
        lift.retain(|(when, t)| {
            let due = *when <= now;
            if due {
                switches.set_enabled(*t, true);
            }
            !due
        });
        while next_fault < at.len() && at[next_fault] == i {
            next_fault += 1;
            let kind = plan.kinds[rng.random_range(0..plan.kinds.len())];
            let mut record = FaultRecord { after_event: i, kind, channel: None };
            match kind {
                FaultKind::Drop => {
                    switches.drop_all();
                }
                FaultKind::Stall => {
                    switches.stall_all();
                }
                FaultKind::RefuseWebsocket | FaultKind::RefuseSse | FaultKind::RefusePoll => {
                    let t = match kind {
                        FaultKind::RefuseWebsocket => Transport::WebSocket,
                        FaultKind::RefuseSse => Transport::Sse,
                        _ => Transport::Poll,
                    };
                    switches.set_enabled(t, false);
                    lift.push((now + Duration::from_millis(rng.random_range(10..=100)), t));
                }
                FaultKind::Unavailable => switches.set_unavailable(0, Some(rng.random_range(1..=3))),
                FaultKind::Truncate => {
                    let ch = &plan.channels[rng.random_range(0..plan.channels.len())];
                    let _ = switches.truncate(ch, rng.random_range(0..=500)).await;
                    record.channel = Some(ch.clone());
                }
                FaultKind::Epoch => {
                    let ch = &plan.channels[rng.random_range(0..plan.channels.len())];
                    let _ = switches.new_epoch(ch).await;
                    record.channel = Some(ch.clone());
                }
            }
            faults.push(record);
        }
        if i % PROGRESS_EVERY == 0 || i == plan.events {
            let new: Vec<FaultRecord> = std::mem::take(&mut faults);
            chaos.update(|r| {
                r.published = i;
                r.faults.extend(new);
            });
        }
    }
    // Lift what is still refused, at its time.
    lift.sort_by_key(|(when, _)| *when);
    for (when, t) in lift {
        tokio::time::sleep_until(when.into()).await;
        switches.set_enabled(t, true);
    }
    let mut ends = BTreeMap::new();
    for (ch, &published) in plan.channels.iter().zip(&counts) {
        ends.insert(ch.clone(), ChannelEnd { head: hub.head(ch).await.unwrap_or_default(), published });
    }
    let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    chaos.update(|r| {
        r.channels = ends;
        r.duration_ms = elapsed;
        r.done = true;
    });
    tracing::info!(seed = plan.seed, elapsed_ms = elapsed, "chaos run done");
}
