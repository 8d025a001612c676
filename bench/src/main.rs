//! `resub-bench`: resub measured side by side with raw baselines on the same
//! machine in the same run. Each part writes a Markdown fragment into
//! `bench/results/`; `scripts/bench.sh` assembles BENCHMARKS.md from them.
//!
//! ```text
//! cargo run --release -p resub-bench -- all
//! cargo run --release -p resub-bench -- throughput --events 1000000 --rounds 5
//! ```

mod alloc;
mod plot;
mod readers;
mod report;
mod scenarios;
mod senders;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Benchmarks of resub against raw baselines.
#[derive(Debug, Parser)]
#[command(name = "resub-bench")]
struct Args {
    /// Where the Markdown fragments go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Rounds per measure (medians and spreads are over these).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Run the clients on a current-thread runtime instead of a
    /// multi-thread one with two workers (servers keep their own runtimes).
    #[arg(long)]
    current_thread: bool,
    #[command(subcommand)]
    part: Part,
}

#[derive(Debug, Subcommand)]
enum Part {
    /// WebSocket, SSE and long-polling throughput against raw readers.
    Throughput {
        /// Events per round.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Publish-to-delivery latency at a fixed rate.
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Seconds per round.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Memory per idle connection and per subscription.
    Memory {
        /// Idle connections.
        #[arg(long, default_value_t = 1_000)]
        connections: usize,
        /// Subscriptions on one connection.
        #[arg(long, default_value_t = 10_000)]
        subscriptions: usize,
        /// Transports measured: `ws`, `sse`, `poll` (default: all three).
        #[arg(long, value_delimiter = ',', default_value = "ws,sse,poll")]
        transports: Vec<String>,
    },
    /// Reconnect arrivals after every client is dropped at once.
    Storm {
        /// Clients.
        #[arg(long, default_value_t = 2_000)]
        clients: usize,
        /// Where the histogram PNG goes.
        #[arg(long, default_value = "docs/reconnect-storm.png")]
        png: PathBuf,
    },
    /// From the server accepting again to the first replayed event.
    Resume,
    /// resub-server beside a hand-written axum + broadcast server: fan-out,
    /// latency under fan-out, memory per idle connection, two nodes on Redis.
    Server {
        /// WebSocket subscribers of the fan-out.
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        /// Events per fan-out round.
        #[arg(long, default_value_t = 2_000)]
        events: u64,
        /// Idle connections per transport in the memory measurement.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Events per second in the latency measurement.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// A Redis for the two-node measurement (`redis://HOST:PORT`).
        #[arg(long)]
        redis: Option<String>,
    },
    /// The client process of the server memory measurement (internal).
    #[command(hide = true)]
    IdleClients {
        #[arg(long)]
        url: String,
        #[arg(long)]
        transport: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "")]
        cursor: String,
        #[arg(long)]
        resub: bool,
        #[arg(long)]
        baseline: bool,
    },
    /// Every part above with its defaults.
    All,
    /// One reader once, for a profiler: `resub-ws`, `raw-ws`, `resub-sse`,
    /// `raw-sse`, `resub-poll` or `raw-poll`.
    Profile {
        /// The reader.
        reader: String,
        /// Events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
}

fn main() {
    let args = Args::parse();
    let rt = if args.current_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    }
    .expect("runtime");
    let rounds = args.rounds.max(1);
    rt.block_on(async {
        match args.part {
            Part::Throughput { events } => scenarios::throughput(&args.out, events, rounds, args.current_thread).await,
            Part::Latency { rate, secs } => scenarios::latency(&args.out, rate, secs, rounds).await,
            Part::Memory { connections, subscriptions, transports } => {
                let transports: Vec<_> = transports.iter().map(|t| scenarios::transport(t)).collect();
                scenarios::memory(&args.out, connections, subscriptions, rounds, &transports).await;
            }
            Part::Storm { clients, png } => scenarios::storm(&args.out, clients, &png).await,
            Part::Resume => scenarios::resume(&args.out, rounds.max(10)).await,
            Part::Profile { reader, events } => scenarios::profile(&reader, events).await,
            Part::Server { subscribers, events, idle, rate, redis } => {
                server::run(&args.out, subscribers, events, idle, rate, rounds, redis).await;
            }
            Part::IdleClients { url, transport, count, cursor, resub, baseline: _ } => {
                server::idle_clients(&url, &transport, count, &cursor, resub).await;
            }
            Part::All => {
                scenarios::throughput(&args.out, 1_000_000, rounds, args.current_thread).await;
                scenarios::latency(&args.out, 2_000, 5, rounds).await;
                scenarios::memory(&args.out, 1_000, 10_000, rounds, &scenarios::ALL_TRANSPORTS).await;
                scenarios::storm(&args.out, 2_000, &PathBuf::from("docs/reconnect-storm.png")).await;
                scenarios::resume(&args.out, rounds.max(10)).await;
            }
        }
    });
}
