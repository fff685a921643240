//! What ships in `deploy/` matches the router. The Grafana dashboard queries only metrics the
//! router exports: every `switchyard_*` name in its queries is read back from a real router's
//! /metrics, one with a DynamoDB store (store reads, the local copy) and a TLS listener, so
//! every family is there. The Kubernetes config map holds a config the router accepts.

use std::collections::BTreeSet;
use std::path::Path;

use crate::dynamo::{Emulator, router_config_text};
use crate::support::*;
use crate::tls::{Pki, TLS_SECTION};

/// The metric names the dashboard's queries use (a histogram's series name its family).
fn queried_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/switchyard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("switchyard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            names.insert(family);
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_one_the_router_exports() {
    let queried = queried_metrics();
    assert!(queried.len() >= 20, "{queried:?}");

    let emulator = Emulator::start().await;
    let pki = Pki::new();
    let setup = Setup::new().await;
    pki.leaf(setup.dir.path(), "api", &["api.example.com"]);
    pki.leaf(setup.dir.path(), "tenants", &["*.tenants.example.com"]);
    let text = router_config_text(&setup, &emulator.url())
        .replace("[flags]", &format!("{TLS_SECTION}[flags]"));
    let config = switchyard::Config::parse(&text, setup.dir.path(), "test").unwrap();
    let router = switchyard::Router::start(config).await.unwrap();
    // One request, so the request families have series.
    get(&client(), router.addr(), "/", &[("x-tenant-id", "acme")]).await;
    // The local copy's gauge appears once the copy thread has written it (about a second).
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while metric(&router, "switchyard_flags_local_copy_version ")
        .await
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the local copy was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, body) = admin_get(&router, "/metrics").await;
    let exported: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the router does not export: {missing:?}"
    );
    router.shutdown().await;
}

/// The router config shipped in the Kubernetes manifests is one the router accepts (its
/// admin token file, a secret in the cluster, stands in as a file here).
#[test]
fn the_kubernetes_config_map_holds_a_valid_router_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/configmap.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let start = yaml.find("router.toml: |\n").expect("a router.toml key") + 15;
    let text: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(text.contains("[flags]"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    let text = text.replace(
        "/etc/switchyard/secret/admin.token",
        token.to_str().unwrap(),
    );
    let config = switchyard::Config::parse(&text, dir.path(), "configmap.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !config.server.shutdown_delay.is_zero(),
        "a delay for the balancer"
    );
}
