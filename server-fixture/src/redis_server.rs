//! A throwaway `redis-server` on a free loopback port, for tests and demos
//! of nodes sharing channels.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `redis-server` may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A `redis-server` process on `127.0.0.1`, without persistence, stopped
/// (killed) when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let redis = resub_fixture::RedisServer::start().await?;
/// let cfg = resub_fixture::FixtureConfig {
///     redis: Some(resub_fixture::RedisConfig::new(redis.url())),
///     ..Default::default()
/// };
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) on a free port and waits until it
    /// accepts connections. Fails with [`io::ErrorKind::NotFound`] when
    /// `redis-server` is not installed.
    pub async fn start() -> io::Result<Self> {
        let mut last = None;
        // The port is free when picked, and may be taken before Redis binds
        // it: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            match Self::start_on(port).await {
                Ok(server) => return Ok(server),
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(err),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    async fn start_on(port: u16) -> io::Result<Self> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    io::ErrorKind::NotFound,
                    "redis-server is not installed (apt-get install redis-server; scripts/test.sh installs it)",
                ),
                _ => e,
            })?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Ready to accept connections") {
                    return Ok(());
                }
            }
            Err(io::Error::other(format!("redis-server exited before listening on port {port}")))
        };
        tokio::time::timeout(READY_WITHIN, ready).await.map_err(|_| io::Error::other("redis-server not ready"))??;
        // Keep reading its output, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, port })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once, as a crash would.
    pub async fn kill(&mut self) -> io::Result<()> {
        self.child.kill().await
    }
}
