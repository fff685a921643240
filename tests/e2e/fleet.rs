//! The fleet registry: real router processes register, keep their presence records fresh,
//! deregister on a clean stop and go stale when killed; `switchyard fleet` lists them and
//! exits 1 when one lags the others for longer than the bound.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::dynamo::{Emulator, router_config_file};
use crate::support::*;

/// `switchyard fleet --json` for a config, parsed, with its exit code.
fn fleet(config: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["fleet", "--config", config, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = switchyard(&args);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, report, err)
}

/// The routers a report lists, as (id, version, live).
fn routers(report: &serde_json::Value) -> Vec<(String, u64, bool)> {
    report["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["router"].as_str().unwrap().to_owned(),
                r["flag_version"].as_u64().unwrap(),
                r["live"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Runs `fleet` until `done` holds for its report (each router's heartbeat is 50 ms).
async fn fleet_until(
    config: &str,
    extra: &[&str],
    what: &str,
    done: impl Fn(i32, &serde_json::Value) -> bool,
) -> (i32, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (code, report, _) = fleet(config, extra);
        if done(code, &report) {
            return (code, report);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn router_config(setup: &Setup, id: &str, poll_ms: u64) -> std::path::PathBuf {
    let text = setup.config_text().replace(
        "poll_interval_ms = 10",
        &format!("poll_interval_ms = {poll_ms}"),
    ) + &format!("[fleet]\nid = \"{id}\"\nheartbeat_ms = 50\n");
    let path = setup.dir.path().join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_register_follow_the_version_deregister_and_go_stale_when_killed() {
    let setup = Setup::new().await;
    let configs: Vec<_> = ["r1", "r2", "r3"]
        .iter()
        .map(|id| router_config(&setup, id, 10))
        .collect();
    let config = configs[0].to_str().unwrap().to_owned();
    let mut r1 = Binary::serve(&configs[0]);
    let mut r2 = Binary::serve(&configs[1]);
    let mut r3 = Binary::serve(&configs[2]);

    let version = setup.set("acme", pin("new"));
    let (code, report) = fleet_until(&config, &[], "three routers at the new version", |_, r| {
        routers(r).iter().filter(|(_, v, _)| *v == version).count() == 3
    })
    .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        routers(&report),
        [
            ("r1".to_owned(), version, true),
            ("r2".to_owned(), version, true),
            ("r3".to_owned(), version, true)
        ]
    );
    assert_eq!(report["store_version"].as_u64(), Some(version));
    assert!(report["problems"].as_array().unwrap().is_empty());
    let (code, text, _) = switchyard(&["fleet", "--config", &config]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("3 live router(s), 0 stale"), "{text}");
    assert!(text.contains("in step"), "{text}");

    // A router killed leaves its record to go stale: listed, not judged.
    r3.signal(Signal::SIGKILL);
    r3.exited().await;
    let (code, report) = fleet_until(&config, &["--fleet-timeout", "1s"], "r3 stale", |_, r| {
        routers(r).contains(&("r3".to_owned(), version, false))
    })
    .await;
    assert_eq!(
        code, 0,
        "a dead router does not hold the fleet back: {report:#}"
    );

    // A clean stop deregisters.
    r2.signal(Signal::SIGTERM);
    assert!(r2.exited().await.success());
    let (_, report, _) = fleet(&config, &["--fleet-timeout", "1s"]);
    let ids: Vec<String> = routers(&report).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["r1", "r3"], "{report:#}");
    r1.signal(Signal::SIGTERM);
    assert!(r1.exited().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_that_lags_past_the_bound_fails_the_check_and_is_named() {
    let setup = Setup::new().await;
    let quick = router_config(&setup, "quick", 10);
    // Polls the store once a minute: it keeps routing by what it loaded at start.
    let slow = router_config(&setup, "slow", 60_000);
    let config = quick.to_str().unwrap().to_owned();
    let _quick = Binary::serve(&quick);
    let _slow = Binary::serve(&slow);
    let (code, _) = fleet_until(
        &config,
        &["--max-lag", "60s"],
        "both routers in step, the slow one past its first poll",
        |c, r| {
            let rows = r["routers"].as_array().unwrap();
            c == 0
                && rows.len() == 2
                && rows.iter().any(|row| {
                    row["router"] == "slow" && row["snapshot_age_ms"].as_u64().unwrap() >= 500
                })
        },
    )
    .await;
    assert_eq!(code, 0);

    let version = setup.set("acme", pin("new"));
    // It is named once the others have routed by the new version for longer than the bound.
    let (code, report) = fleet_until(&config, &["--max-lag", "1s"], "the lag named", |_, r| {
        r["problems"].to_string().contains("slow routes by version")
    })
    .await;
    assert_eq!(code, 1);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "slow routes by version {} while others route by {version}",
            version - 1
        )),
        "{report:#}"
    );
    assert!(!problems.contains("quick routes"), "{report:#}");
    let (code, text, _) = switchyard(&["fleet", "--config", &config, "--max-lag", "1s"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("NOT IN STEP: slow routes by version"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_the_fleet_has_its_own_table_with_a_ttl_and_routers_deregister() {
    let emulator = Emulator::start().await;
    let setup = Setup::new().await;
    let config = router_config_file(&setup, &emulator.url());
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let sdk = emulator.sdk();
    let ttl = sdk
        .describe_time_to_live()
        .table_name("flags-fleet")
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    // Creating again keeps what is there.
    let (code, out, err) = switchyard(&["flags", "create-table", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");

    let text =
        std::fs::read_to_string(&config).unwrap() + "[fleet]\nid = \"ddb-1\"\nheartbeat_ms = 50\n";
    std::fs::write(&config, text).unwrap();
    let mut router = Binary::serve(std::path::Path::new(&config));
    let (_, report) = fleet_until(&config, &[], "the router listed", |_, r| {
        routers(r)
            .iter()
            .any(|(id, _, live)| id == "ddb-1" && *live)
    })
    .await;
    assert_eq!(report["routers"][0]["build"], env!("CARGO_PKG_VERSION"));
    // The record as a direct read sees it: its key, and an expiry a day out.
    let item = sdk
        .get_item()
        .table_name("flags-fleet")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("router#ddb-1".into()),
        )
        .send()
        .await
        .unwrap();
    let expires: u64 = item.item().unwrap()["expires_at"]
        .as_n()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 23 * 3600..=now + 25 * 3600).contains(&expires),
        "{expires} vs {now}"
    );

    router.signal(Signal::SIGTERM);
    assert!(router.exited().await.success());
    let (_, report, _) = fleet(&config, &[]);
    assert!(routers(&report).is_empty(), "{report:#}");
}
