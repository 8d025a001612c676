//! [`NodeArgs`]: the command-line flags that set a node's channels up, shared
//! by the `resub-server` binary and any binary built on this crate with
//! clap.

use std::time::Duration;

use crate::{Config, RedisConfig};

/// The flags of a node's channels: heartbeat, history, queues, long-poll
/// hold, Redis and presence. Flatten it into a clap parser
/// (`#[command(flatten)]`) and apply it with [`NodeArgs::apply`].
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct NodeArgs {
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_ms: u64,
    /// Events retained per channel for replay.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Capacity of each connection's outbound queue, in frames; a connection
    /// that falls this far behind is dropped and resumes.
    #[arg(long, default_value_t = 65_536)]
    pub max_connection_queue: usize,
    /// How long a long poll without `timeout_ms` is held, in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    pub poll_hold_ms: u64,
    /// Keep channel history, epochs and presence in Redis Streams at URL
    /// (`redis://HOST:PORT`), shared with every node started with the same
    /// URL and prefix.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With `--redis`: the prefix of every key.
    #[arg(long, default_value = "resub", requires = "redis")]
    pub redis_prefix: String,
    /// With `--redis`: how soon a stopped node's clients leave presence, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub presence_ttl_ms: u64,
}

impl NodeArgs {
    /// `config` with these settings.
    pub fn apply(&self, config: Config) -> Config {
        Config {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            history: self.history,
            max_connection_queue: self.max_connection_queue,
            poll_hold: Duration::from_millis(self.poll_hold_ms),
            redis: self.redis.as_ref().map(|url| RedisConfig { url: url.clone(), prefix: self.redis_prefix.clone() }),
            presence_ttl: Duration::from_millis(self.presence_ttl_ms),
            ..config
        }
    }
}
