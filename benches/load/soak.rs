//! A memory soak: Switchyard with 10,000 tenants in a file store, 16 keep-alive clients for
//! `--soak SECS`, and a batch of 100 tenants rewritten every second (each a new flag version,
//! so every router rebuilds its snapshot), then as long again idle. Its RSS is sampled every
//! second: before the load, under it, and as it settles. Run it with
//! `_RJEM_MALLOC_CONF=dirty_decay_ms:N` to see how much of the figure is the allocator's decay.
//! With `--soak-shadow`, every request is also copied to a second target and compared (the
//! loaded tenant shadowed at 100%); with `--soak-log`, every request is logged (the access log
//! at 100%): the buffers those keep are in the figure too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Options, Proxy, load, replace_file};

const TENANTS: usize = 10_000;
const CLIENTS: usize = 16;
const BATCH: usize = 100;

/// The flags file: every tenant on `app`, the batch's tenants at version `round + 1`; the
/// loaded tenant (`acme`) shadowed to `copy` when `shadow`.
fn flags(round: usize, shadow: bool) -> String {
    let mut out = format!("{{\"version\":{},\"items\":[", round + 1);
    let copy = if shadow {
        ",\"shadow\":{\"target\":\"copy\",\"percent\":100}"
    } else {
        ""
    };
    out.push_str(&format!(
        "\n{{\"tenant\":\"acme\",\"target\":\"app\",\"version\":1{copy}}}"
    ));
    let batch = (round * BATCH) % TENANTS..(round * BATCH) % TENANTS + BATCH;
    for i in 0..TENANTS {
        let (version, reason) = match batch.contains(&i) && round > 0 {
            true => (round + 1, format!("batch {round}")),
            false => (1, "initial".to_owned()),
        };
        out.push_str(&format!(
            ",\n{{\"tenant\":\"soak-{i:05}\",\"target\":\"app\",\"version\":{version},\"reason\":\"{reason}\"}}"
        ));
    }
    out.push_str("\n]}\n");
    out
}

pub(crate) fn soak_test(
    o: &Options,
    scratch: &Path,
    upstream: SocketAddr,
    seconds: u64,
) -> Result<Value, String> {
    let dir = scratch.join("soak");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("flags.json");
    let shadow = o.soak_shadow;
    std::fs::write(&path, flags(0, shadow)).map_err(|e| e.to_string())?;
    let mut extra = String::new();
    if shadow {
        extra += &format!("[targets.copy]\nendpoints = [\"http://{upstream}\"]\n");
    }
    if o.soak_log {
        extra += "[access_log]\npath = \"access.log\"\nsample_percent = 100\n";
    }
    let proxy = Proxy::switchyard_with(o, &dir, upstream, &extra)?;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let sample = |proxy: &Proxy, secs: u64| -> Vec<f64> {
        (0..secs)
            .map(|_| {
                std::thread::sleep(Duration::from_secs(1));
                mib(proxy.rss())
            })
            .collect()
    };
    let before = sample(&proxy, 3);

    let done = Arc::new(AtomicBool::new(false));
    let batches = {
        let (done, path) = (done.clone(), path.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                round += 1;
                replace_file(&path, &flags(round, shadow));
                std::thread::sleep(
                    (start + Duration::from_secs(round as u64))
                        .saturating_duration_since(Instant::now()),
                );
            }
            round
        })
    };
    let addr = proxy.addr;
    let loaded = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(load(addr, CLIENTS, Duration::from_secs(seconds)))
    });
    let under = sample(&proxy, seconds);
    let run = loaded.join().map_err(|_| "the load panicked")?;
    done.store(true, Ordering::Relaxed);
    let rounds = batches.join().map_err(|_| "the batches panicked")?;
    let after = sample(&proxy, 30);

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let conf = std::env::var("_RJEM_MALLOC_CONF").unwrap_or_else(|_| "built-in".into());
    println!(
        "soak ({TENANTS} tenants, {CLIENTS} clients, {BATCH}-tenant batch a second, {seconds} s, allocator {conf}{}): RSS MiB before {:.1}; under load median {:.1}, max {:.1}; idle after 10 s {:.1}, after 30 s {:.1}; {} requests, {} failed, {rounds} batches",
        match (shadow, o.soak_log) {
            (true, true) => ", shadowed and logged",
            (true, false) => ", shadowed",
            (false, true) => ", logged",
            (false, false) => "",
        },
        median(&before),
        median(&under),
        max(&under),
        after.get(9).copied().unwrap_or(0.0),
        after.last().copied().unwrap_or(0.0),
        run.requests,
        run.errors,
    );
    if run.errors > 0 || run.requests == 0 {
        return Err(format!(
            "{} requests failed: {}",
            run.errors,
            run.first_error.unwrap_or_default()
        ));
    }
    Ok(json!({
        "allocator_conf": conf,
        "shadowed": shadow,
        "logged": o.soak_log,
        "rss_mib_before": before,
        "rss_mib_under_load": under,
        "rss_mib_after": after,
        "requests": run.requests,
        "batches": rounds,
    }))
}
