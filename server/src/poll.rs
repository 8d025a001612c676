//! The long-polling transport: a request that has nothing to answer yet is
//! held as a registered connection until an event or a `reset` is queued for
//! it, its hold time passes, or a fault switch drops or stalls it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::auth::Identity;
use crate::state::{ChannelCursor, Mode, Registered, Shared};

/// Waits for a held poll to be answered. Returns the answer, or `None` when
/// the poll was dropped (the connection must then be aborted). A stalled poll
/// never returns unless it is dropped later; hyper drops the future when the
/// client goes away.
pub(crate) async fn hold(
    shared: &Arc<Shared>,
    registered: Registered,
    channels: &[ChannelCursor],
    hold_ms: u64,
    identity: Arc<Identity>,
) -> Option<String> {
    let Registered { registration, tx, mut rx, mut mode } = registered;
    drop(tx);
    let id = registration.id();
    let deadline = Instant::now() + Duration::from_millis(hold_ms);
    // Set when an event, a reset or the deadline says to answer; the mode is
    // checked once more first, so a poll stalled or dropped at that very
    // moment is never answered.
    let mut due = false;
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Normal => {}
            Mode::Restart => {
                // The events there are, then the word to reconnect.
                let answer = shared.poll_answer(channels, hold_ms, &identity);
                drop(registration);
                let frame = crate::state::encode(&crate::sse::restarting());
                let head = answer.strip_suffix("]}").unwrap_or(&answer);
                return Some(format!("{head},{}]}}", frame.json.as_str()));
            }
            Mode::Dropped => {
                debug!(conn = id, "held poll dropped abruptly");
                return None;
            }
            Mode::Stalled => {
                debug!(conn = id, "held poll stalled");
                let _ = mode.wait_for(|m| *m == Mode::Dropped).await;
                debug!(conn = id, "stalled poll dropped abruptly");
                return None;
            }
        }
        if due {
            break;
        }
        tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            frame = rx.recv() => {
                // `None`: removed from the registry, i.e. dropped.
                frame?;
                due = true;
            }
            () = sleep_until(deadline) => due = true,
        }
    }
    // Answer with the state at this moment; the registration is removed after
    // the answer is computed, and an event published in between only wakes a
    // request that no longer waits.
    let answer = shared.poll_answer(channels, hold_ms, &identity);
    drop(registration);
    debug!(conn = id, "held poll answered");
    Some(answer)
}
