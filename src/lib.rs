//! # resub — resumable real-time subscriptions
//!
//! A client for channels of ordered events over WebSocket, with a promise:
//! every event after a subscription's cursor reaches the application exactly
//! once and in order, or the application is told, with a reason, that it
//! cannot ([`Message::Reset`]).
//!
//! The crate has three layers:
//! - [`protocol`]: the wire format (ids, frames), pure and fuzzable;
//! - [`core`]: the sans-IO session that owns every policy decision
//!   (reconnect with backoff and jitter, resume, de-duplication, gap detection,
//!   heartbeats, connection state);
//! - the driver and [`Client`]: tokio and tokio-tungstenite doing the I/O the
//!   core asks for.
//!
//! ```no_run
//! use futures::StreamExt;
//! use resub::{Client, Message};
//!
//! # async fn run() -> Result<(), resub::Error> {
//! let client = Client::builder("http://127.0.0.1:8080").build()?;
//! let mut trades = client.subscribe("trades").await?;
//! while let Some(msg) = trades.next().await {
//!     match msg? {
//!         Message::Event(ev) => println!("{} {}", ev.id, ev.data),
//!         Message::Reset { reason, .. } => println!("missed events: {reason}; re-sync"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

#[cfg(not(target_arch = "wasm32"))]
pub mod auth;
pub mod core;
mod error;
pub mod protocol;
// In the browser the npm package keeps cursors itself (localStorage).
#[cfg(not(target_arch = "wasm32"))]
pub mod store;

mod client;
mod driver;
#[cfg(not(target_arch = "wasm32"))]
mod plain;

pub use client::{Client, ClientBuilder, States, Subscription};
#[cfg(not(target_arch = "wasm32"))]
pub use core::plain::PlainEvent;
#[cfg(not(target_arch = "wasm32"))]
pub use plain::{PlainSse, PlainSseBuilder};

pub use core::{
    CompactString, ConnectionState, DisconnectReason, Event, Fallback, Member, Message, PresenceAction, PresenceEvent,
    ResetReason, Stats, Transport,
};
pub use error::Error;

/// Frame decoding as the browser driver does it (`JSON.parse` where the
/// quick reading does not apply), for a browser driver of one's own: the
/// npm package runs [`core::Session`] from JavaScript and decodes with these.
#[cfg(target_arch = "wasm32")]
pub mod browser {
    pub use crate::driver::wasm::parse_frames;
}
#[cfg(not(target_arch = "wasm32"))]
pub use store::{CursorStore, FileStore, MemoryStore, StoreError};

/// The instant type used throughout: `std::time::Instant` on native targets,
/// a `performance.now()`-based one in the browser.
pub use web_time::Instant;

/// The README's examples compile as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
