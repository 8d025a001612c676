#![cfg(not(target_arch = "wasm32"))]
//! Durable cursors across process crashes: a subscriber process with a
//! `FileStore` crashes mid-stream (it aborts right after taking an event,
//! with hundreds more in flight), is restarted, is killed with SIGKILL while
//! it waits, and is restarted again. Across the three processes every event
//! arrives exactly once and in order.
//!
//! The subscriber is this test binary run again on an ignored test, which
//! does nothing unless `RESUB_DURABLE_CHILD` tells it what to do.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use resub::{Client, FileStore, Message, Transport};
use resub_fixture::Fixture;
use tokio::io::{AsyncBufReadExt, BufReader};

const CHILD_ENV: &str = "RESUB_DURABLE_CHILD";
const DEADLINE: Duration = Duration::from_secs(60);

/// What the subscriber process is told: server, transport, channel, store
/// directory, and after how many events to crash (0: never).
struct Spec {
    url: String,
    transport: Transport,
    channel: String,
    dir: PathBuf,
    crash_after: u64,
}

impl Spec {
    fn encode(&self) -> String {
        format!("{} {} {} {} {}", self.url, self.transport, self.channel, self.dir.display(), self.crash_after)
    }

    fn decode(s: &str) -> Spec {
        let parts: Vec<&str> = s.split(' ').collect();
        Spec {
            url: parts[0].to_owned(),
            transport: parts[1].parse().unwrap(),
            channel: parts[2].to_owned(),
            dir: PathBuf::from(parts[3]),
            crash_after: parts[4].parse().unwrap(),
        }
    }
}

/// The subscriber process: prints `EVENT <id> <data>` for each event as it
/// takes it, and exits when the data is `end`.
#[tokio::test]
#[ignore = "run by the durable tests as a separate process"]
async fn durable_subscriber_process() {
    let spec = Spec::decode(&std::env::var(CHILD_ENV).expect("started by a durable test"));
    let store = FileStore::new(&spec.dir).unwrap();
    let client = Client::builder(&spec.url).transports(&[spec.transport]).cursor_store(store).build().unwrap();
    let mut sub = client.subscribe(&spec.channel).await.unwrap();
    let mut taken = 0;
    while let Some(msg) = sub.next().await {
        match msg.unwrap() {
            Message::Event(e) => {
                // The cursor was saved before `next` returned it.
                println!("EVENT {} {}", e.id, e.data);
                if e.data == "end" {
                    break;
                }
                taken += 1;
                if taken == spec.crash_after {
                    // A crash: no destructors, no close, events in flight.
                    std::process::abort();
                }
            }
            Message::Reset { reason, .. } => println!("RESET {reason}"),
            _ => {}
        }
    }
    client.close().await;
}

/// Runs the subscriber process until it exits (or, with `kill_at`, until it
/// printed the event with that data, then SIGKILL); returns what it printed
/// and whether it exited normally.
async fn run_child(spec: &Spec, kill_at: Option<&str>) -> (Vec<String>, bool) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "durable_subscriber_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec.encode())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // The harness's own output shares the lines: `test … ... EVENT …`.
            let Some(rest) =
                line.find("EVENT ").map(|i| &line[i + 6..]).or_else(|| line.find("RESET ").map(|i| &line[i..]))
            else {
                continue;
            };
            got.push(rest.to_owned());
            if kill_at.is_some_and(|k| rest.ends_with(&format!(" {k}"))) {
                child.kill().await.unwrap();
                return false;
            }
        }
        child.wait().await.unwrap().success()
    };
    let ok = tokio::time::timeout(DEADLINE, run).await.expect("the subscriber process finished in time");
    (got, ok)
}

fn data_of(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.split_once(' ').map_or(l.clone(), |(_, d)| d.to_owned())).collect()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resub-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn crash_and_restart(transport: Transport) {
    let fx = Fixture::start().await.unwrap();
    let channel = format!("durable-{transport}");
    let dir = fresh_dir(transport.name());
    // The first process starts after this id (as if an earlier run stopped
    // here), so nothing published next can be missed by a late subscribe.
    let start = fx.publish(&channel, None, "0").unwrap();
    resub::CursorStore::save(&FileStore::new(&dir).unwrap(), &channel, &start).unwrap();
    for i in 1..=300 {
        fx.publish(&channel, None, &i.to_string()).unwrap();
    }
    let spec = |crash_after| Spec { url: fx.url(), transport, channel: channel.clone(), dir: dir.clone(), crash_after };

    // 1. Crashes right after taking event 120, with the rest in flight.
    let (first, ok) = run_child(&spec(120), None).await;
    assert!(!ok, "{transport}: the first process crashed");
    assert_eq!(first.len(), 120, "{transport}: {first:?}");
    // 2. Restarted: goes on from 121; killed once it took 300 and waits.
    let (second, _) = run_child(&spec(0), Some("300")).await;
    // 3. Published while no subscriber runs; restarted once more.
    for i in 301..=400 {
        fx.publish(&channel, None, &i.to_string()).unwrap();
    }
    fx.publish(&channel, None, "end").unwrap();
    let (third, ok) = run_child(&spec(0), None).await;
    assert!(ok, "{transport}: the last process finished normally");

    let all: Vec<String> = [first, second, third].concat();
    let mut expected: Vec<String> = (1..=400).map(|i| i.to_string()).collect();
    expected.push("end".into());
    assert_eq!(data_of(&all), expected, "{transport}: every event exactly once, in order, across two crashes");
    let (epoch, seq) = start.rsplit_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();
    for (i, line) in all.iter().enumerate() {
        assert!(line.starts_with(&format!("{epoch}-{} ", seq + 1 + i as u64)), "{transport}: ids follow: {line}");
    }
    assert_eq!(
        resub::CursorStore::load(&FileStore::new(&dir).unwrap(), &channel).unwrap().as_deref(),
        all.last().and_then(|l| l.split_once(' ')).map(|(id, _)| id),
        "{transport}: the store holds the last event taken"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_process_crashes_and_restarts_without_losing_or_repeating_events() {
    for transport in Transport::ALL {
        crash_and_restart(transport).await;
    }
}

/// In one process: a store shared by two subscriptions in turn resumes the
/// second where the first stopped, and a store that fails ends the
/// subscription with a typed error before the event it could not record.
#[tokio::test]
async fn a_cursor_store_resumes_a_later_subscription_and_reports_its_failures() {
    let fx = Fixture::start().await.unwrap();
    let dir = fresh_dir("in-process");
    let start = fx.publish("c", None, "0").unwrap();
    let store = FileStore::new(&dir).unwrap();
    resub::CursorStore::save(&store, "c", &start).unwrap();
    let client = Client::builder(&fx.url()).cursor_store(store).build().unwrap();
    for i in 1..=3 {
        fx.publish("c", None, &i.to_string()).unwrap();
    }
    let mut sub = client.subscribe("c").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Message::Event(e) = sub.next().await.unwrap().unwrap() {
            seen.push(e.data);
        }
    }
    drop(sub);
    let mut sub = client.subscribe("c").await.unwrap();
    loop {
        if let Message::Event(e) = sub.next().await.unwrap().unwrap() {
            assert_eq!(e.data, "3", "the second subscription starts after what the first took");
            break;
        }
    }
    // The directory goes away: the next save fails.
    std::fs::remove_dir_all(&dir).unwrap();
    fx.publish("c", None, "4").unwrap();
    let err = loop {
        match sub.next().await.unwrap() {
            Ok(Message::Event(e)) => panic!("event {} handed out without its cursor saved", e.data),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), "cursor_store", "{err}");
    assert!(sub.next().await.is_none(), "the subscription ended");
    client.close().await;
    assert!(!Path::new(&dir).exists());
}
