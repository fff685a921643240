//! The command line as a user meets it: `check`, `flags`, and `demo`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

#[tokio::test]
async fn check_names_the_bad_key_and_exits_non_zero() {
    let setup = Setup::new().await;
    let good = setup.config_text();
    let path = setup.dir.path().join("check.toml");
    let p = path.to_str().unwrap();
    std::fs::write(&path, &good).unwrap();
    let (code, out, _) = switchyard(&["check", "--config", p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 2 targets, 1 routes"), "{out}");

    let cases = [
        (
            good.replace("default_target = \"legacy\"", "default_target = \"old\""),
            "flags.default_target: \"old\" is not a configured target",
        ),
        (
            good.replace(
                "listen = \"127.0.0.1:0\"\nadmin",
                "listen = \"nowhere\"\nadmin",
            ),
            "server.listen: \"nowhere\" is not an IP:PORT address",
        ),
        (
            format!("{good}[[routes]]\nname = \"api\"\npath_prefix = \"/v2\"\n"),
            "routes[1].name: duplicate route name \"api\"",
        ),
        (
            good.replace("poll_interval_ms = 10", "poll_interval_ms = 10\ncolour = 1"),
            "unknown field `colour`",
        ),
        (
            good.replace("file:flags.json", "file:missing.json"),
            "flags.source: cannot read",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = switchyard(&["check", "--config", p]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    let (code, _, err) = switchyard(&["check", "--config", "/no/such/router.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read config /no/such/router.toml"),
        "{err}"
    );

    // A bad flag item is a warning with its own exit code; the config itself is fine.
    std::fs::write(&path, &good).unwrap();
    setup.write_flags(r#"{"version":1,"items":[{"tenant":"acme","target":"nowhere"}]}"#);
    let (code, out, _) = switchyard(&["check", "--config", p]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("items[0] (tenant \"acme\"): unknown target \"nowhere\""),
        "{out}"
    );
}

#[tokio::test]
async fn flags_set_get_list_record_who_why_and_refuse_unsafe_writes() {
    let setup = Setup::new().await;
    let config = setup.config_path();
    let c = config.to_str().unwrap();
    let (code, out, err) = switchyard(&[
        "flags", "set", "acme", "--target", "new", "--reason", "batch 1", "--config", c, "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["old"], serde_json::Value::Null);
    assert_eq!(
        (
            v["new"]["target"].as_str(),
            v["new"]["updated_by"].as_str(),
            v["new"]["reason"].as_str()
        ),
        (Some("new"), Some("alice"), Some("batch 1"))
    );
    assert_eq!(v["new"]["version"], 1);

    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "globex",
        "--split",
        "legacy=90,new=10",
        "--reason",
        "dial",
        "--by",
        "bob",
        "--config",
        c,
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = switchyard(&["flags", "get", "globex", "--config", c, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["weights"], serde_json::json!({"legacy": 90, "new": 10}));
    assert_eq!(v["updated_by"], "bob");

    // Refusals: unknown target, bad weights, stale version, sealed tenant; none writes.
    let before = std::fs::read(setup.flags_path()).unwrap();
    for (args, want) in [
        (
            vec!["flags", "set", "acme", "--target", "nwe", "--reason", "x"],
            "unknown target \"nwe\"",
        ),
        (
            vec![
                "flags",
                "set",
                "acme",
                "--split",
                "legacy=90,new=20",
                "--reason",
                "x",
            ],
            "sum to 110",
        ),
        (
            vec![
                "flags",
                "set",
                "acme",
                "--target",
                "legacy",
                "--reason",
                "x",
                "--expect-version",
                "0",
            ],
            "expected version 0, it is at version 1, last written by alice",
        ),
        (
            vec!["flags", "set", "acme", "--target", "legacy"],
            "--reason",
        ),
    ] {
        let mut args = args;
        args.extend(["--config", c]);
        let (code, _, err) = switchyard(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    assert_eq!(
        std::fs::read(setup.flags_path()).unwrap(),
        before,
        "a refused write changed the store"
    );

    let (code, _, _) = switchyard(&[
        "flags", "set", "acme", "--seal", "--reason", "cut over", "--config", c,
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "acme",
        "--target",
        "legacy",
        "--reason",
        "roll back",
        "--config",
        c,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("sealed on new"), "{err}");
    let (code, _, err) = switchyard(&[
        "flags",
        "set",
        "acme",
        "--target",
        "legacy",
        "--reason",
        "data restored",
        "--force",
        "--config",
        c,
    ]);
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = switchyard(&["flags", "list", "--config", c, "--json"]);
    assert_eq!(code, 0);
    let items: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let acme = items.iter().find(|i| i["tenant"] == "acme").unwrap();
    assert_eq!(
        (
            acme["target"].as_str(),
            acme["version"].as_u64(),
            acme["sealed"].as_bool()
        ),
        (Some("legacy"), Some(3), Some(true))
    );
    let (_, table, _) = switchyard(&["flags", "list", "--config", c]);
    assert!(
        table.lines().any(|l| l.starts_with("acme")
            && l.contains("legacy (sealed)")
            && l.contains("data restored")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_its_printed_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .env("USER", "alice")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C stops everything");
        printed.push(line);
        if done {
            break;
        }
    }
    let proxy: std::net::SocketAddr = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("proxy      http://"))
        .unwrap()
        .parse()
        .unwrap();
    let (_, h, body) = get(&client(), proxy, "/hello", &[("x-tenant-id", "acme")]).await;
    assert!(body.starts_with("legacy:"), "{body} {h:?}");
    // Run the printed flip line as printed, with the binary under test.
    let flip = printed
        .iter()
        .find(|l| l.contains("flags set acme --target new"))
        .unwrap();
    let args: Vec<String> = flip
        .split_whitespace()
        .skip(1)
        .map(|a| a.trim_matches('"').to_owned())
        .collect();
    let args: Vec<String> = {
        // Re-join the quoted reason ("batch 1") that whitespace splitting cut in two.
        let joined = args.join(" ");
        let (before, rest) = joined.split_once("--reason ").unwrap();
        let (reason, after) = rest.split_once(" --store ").unwrap();
        before
            .split_whitespace()
            .map(str::to_owned)
            .chain([
                "--reason".into(),
                reason.into(),
                "--store".into(),
                after.into(),
            ])
            .collect()
    };
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .env("USER", "alice")
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}");
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, _, body) = get(&client(), proxy, "/hello", &[("x-tenant-id", "acme")]).await;
        if body.starts_with("new:") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flip never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    send_signal(&demo, nix::sys::signal::Signal::SIGINT);
    assert!(
        demo.wait().unwrap().success(),
        "the demo did not stop cleanly on Ctrl-C"
    );
}

#[tokio::test]
async fn a_batch_on_the_file_store_moves_sealed_tenants_only_when_forced() {
    let setup = Setup::new().await;
    let config = setup.config_path();
    let c = config.to_str().unwrap();
    for (tenant, seal) in [("acme", true), ("globex", false)] {
        let mut args = vec![
            "flags", "set", tenant, "--target", "new", "--reason", "cut over", "--config", c,
        ];
        if seal {
            args.push("--seal");
        }
        assert_eq!(switchyard(&args).0, 0);
    }
    let router = setup.start().await;
    let batch = setup.dir.path().join("rollback.jsonl");
    std::fs::write(
        &batch,
        "{\"tenant\":\"acme\",\"target\":\"legacy\"}\n{\"tenant\":\"globex\",\"target\":\"legacy\"}\n",
    )
    .unwrap();
    let b = batch.to_str().unwrap();
    let (code, out, _) = switchyard(&[
        "flags",
        "apply",
        b,
        "--reason",
        "roll back",
        "--config",
        c,
        "--yes",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("refused without --force: acme")
            && out.contains("written: 1, failed: 0, unchanged: 0, rejected: 1"),
        "{out}"
    );
    let flag = |t| setup.store().get(t).unwrap().unwrap();
    assert_eq!(flag("acme").target.as_deref(), Some("new"));
    assert_eq!(flag("globex").target.as_deref(), Some("legacy"));
    // A gate is for a move with a hold: without --hold-max it is refused, naming what to add,
    // and with --json too (a hold prints its steps).
    for extra in [
        &["--gate-cmd", "true"][..],
        &["--hold-max", "5s", "--json"][..],
    ] {
        let mut args = vec!["flags", "apply", b, "--reason", "r", "--config", c, "--yes"];
        args.extend(extra);
        let (code, _, err) = switchyard(&args);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("--hold-max"), "{err}");
    }

    let (code, out, err) = switchyard(&[
        "flags",
        "apply",
        b,
        "--reason",
        "restore from backup",
        "--config",
        c,
        "--yes",
        "--force",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"][0]["moves_sealed"], true);
    assert_eq!(v["unchanged"], serde_json::json!(["globex"]));
    let acme = flag("acme");
    assert_eq!(
        (acme.target.as_deref(), acme.sealed),
        (Some("legacy"), true)
    );
    assert_eq!(acme.reason.as_deref(), Some("restore from backup"));
    wait_version(&router, setup.store().load().unwrap().version).await;
    let (_, h, _) = get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    assert_eq!(h["x-upstream"], "legacy");
    router.shutdown().await;
}

#[tokio::test]
async fn logs_can_be_json_lines_for_a_log_pipeline() {
    let setup = Setup::new().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(setup.config_path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.map_while(Result::ok) {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "message", "target"] {
            assert!(event.get(key).is_some(), "no {key}: {line}");
        }
        let serving = event["message"] == "switchyard serving";
        seen.push(event);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let serving = seen.last().expect("log lines");
    assert_eq!(serving["message"], "switchyard serving", "{seen:?}");
    // Fields are flat keys of the line, not buried in a nested object.
    assert!(
        serving["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{serving}"
    );
    assert!(
        seen.iter()
            .any(|e| e["message"] == "flag snapshot applied" && e["version"] == 1)
    );
}
