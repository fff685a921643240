//! The config file as written: the serde shapes, every key optional where it has a default,
//! unknown keys refused. [`super::parse`] turns them into the validated types.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) flags: RawFlags,
    #[serde(default)]
    pub(super) tenant: RawTenant,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) shadow: RawShadow,
    pub(super) access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub(super) fleet: RawFleet,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) id: Option<String>,
    pub(super) heartbeat_ms: Option<u64>,
    pub(super) hold_queue: Option<u64>,
    pub(super) hold_queue_bytes: Option<u64>,
    pub(super) drive_ramps: Option<bool>,
    pub(super) ramp_lease_ms: Option<u64>,
    pub(super) hold_gate_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub(super) path: String,
    pub(super) sample_percent: Option<u32>,
    pub(super) buffer_lines: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    pub(super) max_body_bytes: Option<u64>,
    pub(super) max_compare_bytes: Option<u64>,
    pub(super) queue: Option<u64>,
    pub(super) max_queued_bytes: Option<u64>,
    pub(super) concurrency: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) compare_headers: Option<Vec<String>>,
    pub(super) ignore_fields: Option<Vec<String>>,
    pub(super) noise_sample_percent: Option<u32>,
    pub(super) recent_mismatches: Option<u64>,
    pub(super) max_tenants: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) drain_timeout_ms: Option<u64>,
    pub(super) shutdown_delay_ms: Option<u64>,
    pub(super) header_read_timeout_ms: Option<u64>,
    pub(super) first_byte_timeout_ms: Option<u64>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_address: Option<usize>,
    pub(super) max_uploads_per_address: Option<usize>,
    pub(super) listen_backlog: Option<u32>,
    pub(super) http2_max_concurrent_streams: Option<u32>,
    pub(super) trust_forwarded_headers: Option<bool>,
    pub(super) keep_underscored_headers: Option<bool>,
    pub(super) admin_token_file: Option<String>,
    pub(super) read_token_file: Option<String>,
    pub(super) console_hosts: Option<Vec<String>>,
    pub(super) tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) listen: String,
    pub(super) client_ca: Option<String>,
    pub(super) client_auth: Option<String>,
    pub(super) handshake_timeout_ms: Option<u64>,
    pub(super) reload_interval_ms: Option<u64>,
    #[serde(default)]
    pub(super) certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) name: String,
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlags {
    pub(super) source: String,
    pub(super) default_target: String,
    pub(super) poll_interval_ms: Option<u64>,
    pub(super) cache_path: Option<String>,
    pub(super) ready_max_age_ms: Option<u64>,
    pub(super) reconcile_interval_ms: Option<u64>,
    pub(super) reconcile_items_per_second: Option<u64>,
    pub(super) close_moved_streams_after_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    #[serde(default)]
    pub(super) from: Vec<String>,
    #[serde(default)]
    pub(super) sticky_key: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) endpoints: Vec<String>,
    pub(super) protocol: Option<String>,
    pub(super) tls_ca_file: Option<String>,
    pub(super) tls_server_name: Option<String>,
    pub(super) tls_client_cert: Option<String>,
    pub(super) tls_client_key: Option<String>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) pool_idle_timeout_ms: Option<u64>,
    pub(super) pool_max_idle_per_endpoint: Option<usize>,
    pub(super) health: Option<RawHealth>,
    #[serde(default)]
    pub(super) ejection: RawEjection,
    #[serde(default)]
    pub(super) retry: RawRetry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) path: Option<String>,
    pub(super) interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) unhealthy_after: Option<u32>,
    pub(super) healthy_after: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEjection {
    pub(super) consecutive_failures: Option<u32>,
    pub(super) base_ms: Option<u64>,
    pub(super) max_ms: Option<u64>,
    pub(super) max_ejected_percent: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) budget_percent: Option<u32>,
    pub(super) min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: String,
    pub(super) path_prefix: String,
    pub(super) target: Option<String>,
    pub(super) require_tenant: Option<bool>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) try_timeout_ms: Option<u64>,
    pub(super) idle_timeout_ms: Option<u64>,
    pub(super) upload_timeout_ms: Option<u64>,
    pub(super) min_upload_bytes_per_s: Option<u64>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) upgrades: Option<Vec<String>>,
    pub(super) shadow_methods: Option<Vec<String>>,
}
