//! `POST /control/chaos` and `GET /control/chaos`: a seeded schedule of
//! publishes and faults, its bounds, and its report.

mod common;

use common::{get, http, quiet_fixture};
use resub_fixture::{ChaosPlan, FaultKind, FixtureError};

fn plan(seed: u64) -> ChaosPlan {
    ChaosPlan {
        seed,
        events: 400,
        faults: 40,
        channels: vec!["a".into(), "b".into()],
        rate: 100_000,
        kinds: vec![FaultKind::Truncate, FaultKind::Epoch, FaultKind::Unavailable],
    }
}

#[tokio::test]
async fn a_run_publishes_every_event_and_injects_every_fault_and_the_same_seed_gives_the_same_schedule() {
    let mut schedules = Vec::new();
    for _ in 0..2 {
        let fx = quiet_fixture().await;
        assert_eq!(get(fx.addr(), "/control/chaos").await.status, 404, "no run yet");
        let body = serde_json::to_vec(&plan(99)).unwrap();
        let reply = http(fx.addr(), "POST", "/control/chaos", &[("content-type", "application/json")], &body).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        fx.chaos_finished().await;
        let report = get(fx.addr(), "/control/chaos").await.json();
        assert_eq!(report["done"], true);
        assert_eq!(report["published"], 400);
        assert_eq!(report["channels"]["a"]["published"], 200);
        assert_eq!(report["channels"]["b"]["published"], 200);
        let faults = report["faults"].as_array().unwrap().clone();
        assert_eq!(faults.len(), 40);
        // The head is in the epoch the last epoch fault (if any) started.
        let head = report["channels"]["a"]["head"].as_str().unwrap();
        assert_eq!(head, fx.head("a"));
        assert_eq!(fx.stats().events_published, 400);
        schedules.push(faults);
    }
    assert_eq!(schedules[0], schedules[1], "one seed, one schedule");
}

#[tokio::test]
async fn plans_out_of_bounds_are_refused_and_one_run_at_a_time() {
    let fx = quiet_fixture().await;
    let mut bad = plan(1);
    bad.channels = vec!["not a channel".into()];
    assert!(matches!(fx.start_chaos(bad), Err(FixtureError::InvalidChannel(_))));
    let mut bad = plan(1);
    bad.faults = bad.events + 1;
    assert!(matches!(fx.start_chaos(bad), Err(FixtureError::InvalidPlan(_))));
    let reply =
        http(fx.addr(), "POST", "/control/chaos", &[("content-type", "application/json")], b"{\"seed\":1}").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let mut slow = plan(2);
    slow.rate = 1;
    slow.events = 1_000;
    fx.start_chaos(slow).unwrap();
    assert!(matches!(fx.start_chaos(plan(3)), Err(FixtureError::Busy)));
    let body = serde_json::to_vec(&plan(3)).unwrap();
    let reply = http(fx.addr(), "POST", "/control/chaos", &[("content-type", "application/json")], &body).await;
    assert_eq!(reply.status, 409);
}
