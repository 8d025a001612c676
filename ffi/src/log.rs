//! The library's logs (`tracing` in the Rust client and this crate), routed
//! to the host: to a [`LogListener`] the app sets (Android's `Log`, iOS's
//! `os_log`, Python's `logging`), or, without one, to standard error when
//! the environment variable `RUST_LOG` names a level. Listener exceptions
//! and other callback failures are logged at `warn`.
//!
//! A listener is called on a thread of its own (`resub-log`), never on the
//! client's I/O threads; lines beyond a queue of 1,024 are dropped rather
//! than held up.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::types::ListenerError;

/// How much is logged, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    /// Failures the client does not recover from by itself.
    Error,
    /// Failures it recovers from, and callbacks that raised.
    Warn,
    /// Connections, fallbacks, reconnects.
    Info,
    /// Frames and decisions.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn of(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        // `RUST_LOG` may hold directives (`resub=debug,warn`): the most
        // verbose level named wins.
        s.split(',')
            .filter_map(|d| match d.rsplit('=').next()?.trim().to_ascii_lowercase().as_str() {
                "error" => Some(LogLevel::Error),
                "warn" => Some(LogLevel::Warn),
                "info" => Some(LogLevel::Info),
                "debug" => Some(LogLevel::Debug),
                "trace" => Some(LogLevel::Trace),
                _ => None,
            })
            .max()
    }
}

/// Receives the library's log lines, on the library's log thread.
#[uniffi::export(callback_interface)]
pub trait LogListener: Send + Sync {
    /// One line: its level, the module it comes from, and the text.
    fn log(&self, level: LogLevel, target: String, message: String) -> Result<(), ListenerError>;
}

/// Sends the library's log lines of `level` and more severe to `listener`
/// from now on (replacing a listener set before), on a thread of its own.
#[uniffi::export]
pub fn set_log_listener(listener: Box<dyn LogListener>, level: LogLevel) {
    install();
    let (tx, rx) = sync_channel::<(LogLevel, String, String)>(1024);
    let thread = std::thread::Builder::new()
        .name("resub-log".into())
        .spawn(move || {
            while let Ok((level, target, message)) = rx.recv() {
                // A logger that raises has nowhere to be reported to.
                let _ = listener.log(level, target, message);
            }
        })
        .expect("the log thread starts");
    let old = SINK.lock().expect("log lock").replace(Sink::Listener { tx, thread });
    MAX.store(level as u8 + 1, Ordering::Release);
    if let Some(old) = old {
        old.stop();
    }
}

/// Stops sending log lines to the listener (its thread ends once it has
/// passed on what was queued).
#[uniffi::export]
pub fn clear_log_listener() {
    let old = SINK.lock().expect("log lock").take();
    MAX.store(env_level().map_or(0, |l| l as u8 + 1), Ordering::Release);
    if let Some(old) = old {
        old.stop();
    }
}

enum Sink {
    Listener { tx: SyncSender<(LogLevel, String, String)>, thread: JoinHandle<()> },
}

impl Sink {
    fn stop(self) {
        let Sink::Listener { tx, thread } = self;
        drop(tx);
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
/// The most verbose level passed on, plus one; 0: nothing.
static MAX: AtomicU8 = AtomicU8::new(0);

fn env_level() -> Option<LogLevel> {
    std::env::var("RUST_LOG").ok().as_deref().and_then(LogLevel::parse)
}

/// Installs the layer that routes log lines (once, at the first client or
/// listener); a host that installed a `tracing` subscriber of its own keeps it.
pub(crate) fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if MAX.load(Ordering::Acquire) == 0 {
            MAX.store(env_level().map_or(0, |l| l as u8 + 1), Ordering::Release);
        }
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Route));
    });
}

/// Stops the log listener's thread (at exit, with every client).
pub(crate) fn shutdown() {
    if let Some(old) = SINK.lock().expect("log lock").take() {
        old.stop();
    }
}

struct Route;

impl<S: Subscriber> Layer<S> for Route {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = LogLevel::of(event.metadata().level());
        if (level as u8) >= MAX.load(Ordering::Acquire) {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let target = event.metadata().target().to_owned();
        match &*SINK.lock().expect("log lock") {
            Some(Sink::Listener { tx, .. }) => {
                let _ = tx.try_send((level, target, text.0));
            }
            None => eprintln!("{level:?} {target}: {}", text.0),
        }
    }
}

/// An event's message, then its fields as `name=value`.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}
