//! The delivery promise, checked per channel for the chaos tests (native
//! and in the browser): every event after the cursor exactly once and in
//! order, except across a typed reset whose reason a fault can cause.

use std::collections::BTreeMap;

use resub::{Message, ResetReason};

/// What one channel's subscriber has seen.
pub struct Track {
    /// The epoch of the cursor.
    pub epoch: String,
    /// The sequence number of the cursor.
    pub seq: u64,
    /// The publisher's counter of the last event, unknown after a reset
    /// until the next event.
    pub n: Option<u64>,
    /// The publisher's counter of the last event seen.
    pub last_n: u64,
    /// Events seen.
    pub events: u64,
    /// Resets seen, by the fault kind that causes them (`truncate`, `epoch`).
    pub resets: BTreeMap<String, u64>,
}

fn split_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id.rsplit_once('-').unwrap_or_else(|| panic!("malformed id {id}"));
    (epoch.to_owned(), seq.parse().unwrap_or_else(|_| panic!("malformed id {id}")))
}

impl Track {
    pub fn new(head: &str) -> Self {
        let (epoch, seq) = split_id(head);
        Track { epoch, seq, n: Some(0), last_n: 0, events: 0, resets: BTreeMap::new() }
    }

    /// Checks one message against the promise; `Err` says what broke it.
    pub fn see(&mut self, channel: &str, msg: Message) -> Result<(), String> {
        match msg {
            Message::Event(e) => {
                let (epoch, seq) = split_id(&e.id);
                if epoch != self.epoch || seq != self.seq + 1 {
                    return Err(format!(
                        "{channel}: event {} after {}-{}: gap, duplicate or reorder",
                        e.id, self.epoch, self.seq
                    ));
                }
                let n: u64 = e
                    .data
                    .strip_prefix(&format!("{channel}:"))
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("{channel}: event {} carries {:?}", e.id, e.data))?;
                match self.n {
                    Some(prev) if n != prev + 1 => {
                        return Err(format!("{channel}: event {} carries #{n} after #{prev}", e.id));
                    }
                    None if n <= self.last_n => {
                        return Err(format!("{channel}: after a reset, #{n} is not after #{}", self.last_n));
                    }
                    _ => {}
                }
                self.seq = seq;
                self.n = Some(n);
                self.last_n = n;
                self.events += 1;
            }
            Message::Reset { reason, head, .. } => {
                let name = match reason {
                    ResetReason::HistoryTruncated => "truncate",
                    ResetReason::EpochChanged => "epoch",
                    other => return Err(format!("{channel}: reset for {other}, which no fault causes")),
                };
                *self.resets.entry(name.to_owned()).or_default() += 1;
                let (epoch, seq) = split_id(&head);
                if epoch == self.epoch && seq < self.seq {
                    return Err(format!("{channel}: reset to {head}, behind {}-{}", self.epoch, self.seq));
                }
                (self.epoch, self.seq, self.n) = (epoch, seq, None);
            }
            Message::Resumed { .. } => {}
            other => return Err(format!("{channel}: unexpected {other:?}")),
        }
        Ok(())
    }

    /// Whether the subscriber is at the channel's end: its head id, after
    /// `published` events (or a reset to the head with nothing after it).
    pub fn at_end(&self, head: &str, published: u64) -> bool {
        let (epoch, seq) = split_id(head);
        epoch == self.epoch && seq == self.seq && (self.n.is_none() || self.n == Some(published))
    }
}
