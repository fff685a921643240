//! The DynamoDB flag store: production's shared flag table.
//!
//! Layout (`flags create-table` makes it; `deploy/terraform/modules/flag-store` describes the same):
//! - Flags table `TABLE`, partition key `tenant` (S). One item per tenant, its attributes the
//!   flag's fields (`mode`, `target`, `weights`, `sealed`, `version`, `updated_by`,
//!   `updated_at`, `reason`), so an item reads in the console as it does in the CLI. The item
//!   `tenant = "#meta"` holds `version` (N): every write bumps it.
//! - Audit table `TABLE-audit`, partition key `stream` (S, always `changes`), sort key `seq`
//!   (N, the meta version the write made). Each record holds `tenant`, `old` and `new` (the
//!   flag items as JSON), `by`, `at`, `reason`. Index `by_tenant` (`tenant`, `seq`) serves
//!   `flags history`. Sparse index `sealed` (`seal_shard`, `seq`, with `tenant` and `new`)
//!   holds only the records that seal a tenant or change a sealed one (`seal_shard` is set on
//!   those alone, one of 16 by the tenant): a router starting with no snapshot reads it to
//!   judge each sealed tenant's item against its audited seal, never the whole stream.
//! - Fleet table `TABLE-fleet`, partition key `pk` (S), TTL on `expires_at`: the routers'
//!   presence records ([`crate::fleet`]), which churn and never bump the flag version.
//!
//! A write is one transaction: bump the meta version (conditional on the version read), put the
//! flag (conditional on the tenant's version), put the audit record. So no flip is ever
//! unaudited, two operators racing on a tenant cannot both win, and a failed write changes
//! nothing.
//!
//! A router polls the meta item (one small consistent read, whatever the table's size). When it
//! moved, one consistent query of the audit stream after the last version seen returns exactly
//! the changed flags: reads proportional to the change. Cold start scans the flags table in
//! parallel segments.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType,
    TransactWriteItem, Update,
};
use serde_json::Value;

use crate::error::{ItemError, StoreError};
use crate::identity::StoreIdentity;
use crate::model::{FlagItem, Targets, now_secs};
use crate::snapshot::{Load, LoadedItem};
use crate::source::{Source, Update as SourceUpdate};
use crate::write::{Current, FlagWrite};

const META: &str = "#meta";
const STREAM: &str = "changes";
const BY_TENANT: &str = "by_tenant";
/// The audit table's sparse index of seal records.
const SEALED: &str = "sealed";
/// The partitions of the seal index, read in parallel.
const SEAL_SHARDS: u64 = 16;

/// The seal index partition of a tenant's records: a stable hash (FNV-1a) of its id.
fn seal_shard(tenant: &str) -> String {
    let hash = (tenant.bytes()).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:02}", hash % SEAL_SHARDS)
}
/// The audit table's record of the store's identity (`stream = "#identity"`, `seq = 0`).
const IDENTITY: &str = "#identity";

/// The meta item: the store's version and identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub version: u64,
    /// `None` for a store made before identities (`flags create-table` gives it one).
    pub identity: Option<StoreIdentity>,
}

/// What `create_tables` did to the meta item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new, empty store.
    New { id: String },
    /// The store existed and is kept as it was (given an identity if it had none).
    Kept { id: String, version: u64 },
    /// The meta item was lost and is rebuilt at the audit stream's last version, with the
    /// identity the audit table records (`same_identity`) or a new one.
    Rebuilt {
        id: String,
        version: u64,
        same_identity: bool,
    },
}

fn new_store_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `dynamodb://TABLE?region=us-east-1&endpoint=http://127.0.0.1:8000&segments=4`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamoUrl {
    pub table: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Parallel scan segments at cold start.
    pub segments: u32,
}

impl DynamoUrl {
    pub fn parse(url: &str) -> Result<DynamoUrl, String> {
        let rest = url
            .strip_prefix("dynamodb://")
            .ok_or("a DynamoDB store starts with dynamodb://")?;
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        if table.len() < 3
            || table.len() > 250
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "{table:?} is not a DynamoDB table name (3 to 250 of A-Z a-z 0-9 _ - .)"
            ));
        }
        let mut parsed = DynamoUrl {
            table: table.to_owned(),
            region: None,
            endpoint: None,
            segments: 4,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
            match k {
                "region" => parsed.region = Some(v.to_owned()),
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(format!("endpoint {v:?} must be an http:// or https:// URL"));
                    }
                    parsed.endpoint = Some(v.to_owned());
                }
                "segments" => {
                    parsed.segments = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("segments {v:?} must be 1 to 64"))?;
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (use region, endpoint, segments)"
                    ));
                }
            }
        }
        Ok(parsed)
    }

    pub fn audit_table(&self) -> String {
        format!("{}-audit", self.table)
    }

    /// The table of high-churn records: routers' presence ([`crate::fleet`]).
    pub fn fleet_table(&self) -> String {
        format!("{}-fleet", self.table)
    }

    /// A loopback plain-HTTP endpoint: a local emulator, which takes any credentials.
    fn is_local(&self) -> bool {
        self.endpoint.as_deref().is_some_and(|e| {
            let host = e.trim_start_matches("http://");
            e.starts_with("http://")
                && (host.starts_with("127.")
                    || host.starts_with("localhost")
                    || host.starts_with("[::1]"))
        })
    }
}

/// Reads made against the store, exported as metrics so the cost of polling is visible.
#[derive(Debug, Default)]
pub struct StoreReads {
    pub gets: AtomicU64,
    pub queries: AtomicU64,
    pub scans: AtomicU64,
    /// Items returned by all of them.
    pub items: AtomicU64,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub tenant: String,
    pub old: Option<FlagItem>,
    pub new: Option<FlagItem>,
    pub by: String,
    pub at: String,
    pub reason: String,
    /// Why `new` is `None` although the record has a value (a field of the wrong type...).
    pub new_unreadable: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    url: DynamoUrl,
    reads: Arc<StoreReads>,
}

fn sdk_err<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Remote {
        op,
        source: Box::new(e),
    }
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Remote {
        op: "build request",
        source: Box::new(e),
    }
}

impl DynamoStore {
    pub async fn connect(url: &DynamoUrl) -> DynamoStore {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(500))
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = &url.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &url.endpoint {
            loader = loader.endpoint_url(endpoint);
            if url.is_local() {
                loader = loader
                    .region(aws_config::Region::new(
                        url.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    ))
                    .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                        "local",
                        "local",
                        None,
                        None,
                        "switchyard-local",
                    ));
            }
        }
        let config = loader.load().await;
        DynamoStore {
            client: Client::new(&config),
            url: url.clone(),
            reads: Arc::default(),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &DynamoUrl {
        &self.url
    }

    pub fn reads(&self) -> Arc<StoreReads> {
        self.reads.clone()
    }

    pub fn describe(&self) -> String {
        format!("dynamodb://{}", self.url.table)
    }

    /// Creates the flags and audit tables (on-demand billing) and the meta item; tables that
    /// already exist are kept, and a lost meta item is rebuilt from the audit stream.
    pub async fn create_tables(&self) -> Result<Created, StoreError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(build_err)
        };
        let flags = self
            .client
            .create_table()
            .table_name(&self.url.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("tenant", ScalarAttributeType::S)?)
            .key_schema(key("tenant", KeyType::Hash)?)
            .send()
            .await;
        ignore_existing(flags.map(|_| ()), "create flags table")?;
        let index = GlobalSecondaryIndex::builder()
            .index_name(BY_TENANT)
            .key_schema(key("tenant", KeyType::Hash)?)
            .key_schema(key("seq", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_err)?;
        let audit = self
            .client
            .create_table()
            .table_name(self.url.audit_table())
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("stream", ScalarAttributeType::S)?)
            .attribute_definitions(attr("seq", ScalarAttributeType::N)?)
            .attribute_definitions(attr("tenant", ScalarAttributeType::S)?)
            .attribute_definitions(attr("seal_shard", ScalarAttributeType::S)?)
            .key_schema(key("stream", KeyType::Hash)?)
            .key_schema(key("seq", KeyType::Range)?)
            .global_secondary_indexes(index)
            .global_secondary_indexes(seal_index()?)
            .send()
            .await;
        ignore_existing(audit.map(|_| ()), "create audit table")?;
        let fleet = self
            .client
            .create_table()
            .table_name(self.url.fleet_table())
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .key_schema(key("pk", KeyType::Hash)?)
            .send()
            .await;
        ignore_existing(fleet.map(|_| ()), "create fleet table")?;
        for table in [
            self.url.table.clone(),
            self.url.audit_table(),
            self.url.fleet_table(),
        ] {
            self.wait_active(&table).await?;
        }
        self.add_seal_index().await?;
        self.expire_fleet_records().await?;
        self.create_meta().await
    }

    /// Adds the seal index to an audit table made before it, and waits for it to be active.
    /// Seals written before it are not in it: the one-way door a starting router applies
    /// covers the seals written since (running routers judge every item as before).
    async fn add_seal_index(&self) -> Result<(), StoreError> {
        let table = self.url.audit_table();
        let mut asked = false;
        for _ in 0..120 {
            let out = (self.client.describe_table().table_name(&table).send().await)
                .map_err(sdk_err("describe the audit table"))?;
            let index = (out.table().map(|t| t.global_secondary_indexes()))
                .and_then(|list| list.iter().find(|i| i.index_name() == Some(SEALED)));
            match index.and_then(|i| i.index_status()) {
                Some(aws_sdk_dynamodb::types::IndexStatus::Active) => return Ok(()),
                // DynamoDB Local reports no status: its indexes are active at once.
                None if index.is_some() => return Ok(()),
                None if index.is_none() && !asked => {
                    asked = true;
                    let create =
                        aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                            .index_name(SEALED)
                            .set_key_schema(Some(seal_index()?.key_schema))
                            .projection(seal_projection())
                            .build()
                            .map_err(build_err)?;
                    let attr = AttributeDefinition::builder()
                        .attribute_name("seal_shard")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(build_err)?;
                    (self.client.update_table())
                        .table_name(&table)
                        .attribute_definitions(attr)
                        .global_secondary_index_updates(
                            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                                .create(create)
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(sdk_err("add the seal index to the audit table"))?;
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        Err(StoreError::Remote {
            op: "wait for the seal index",
            source: format!("the index {SEALED} of {table} is not active after 2 minutes").into(),
        })
    }

    /// The flags the audit trail last recorded as sealed, one a tenant: the seal index's 16
    /// partitions read in parallel, each tenant's last record kept. A tenant whose last seal
    /// record unsealed it (a forced write) is not among them.
    pub async fn audited_seals(&self) -> Result<Vec<FlagItem>, StoreError> {
        let mut reads = tokio::task::JoinSet::new();
        for shard in 0..SEAL_SHARDS {
            let (client, table) = (self.client.clone(), self.url.audit_table());
            reads.spawn(async move {
                let mut pages = (client.query())
                    .table_name(table)
                    .index_name(SEALED)
                    .key_condition_expression("seal_shard = :s")
                    .expression_attribute_values(":s", AttributeValue::S(format!("{shard:02}")))
                    .into_paginator()
                    .send();
                let mut records = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = match page {
                        Ok(page) => page,
                        // An audit table made before the index: no seal can be judged.
                        Err(e) if format!("{e:?}").contains("specified index") => {
                            return Ok(None);
                        }
                        Err(e) => return Err(sdk_err("query the seal index")(e)),
                    };
                    records.extend(page.items().iter().map(audit_record));
                }
                Ok::<_, StoreError>(Some(records))
            });
        }
        let mut last: HashMap<String, AuditRecord> = HashMap::new();
        while let Some(read) = reads.join_next().await {
            let records = read.map_err(|e| StoreError::Remote {
                op: "query the seal index",
                source: e.to_string().into(),
            })??;
            let Some(records) = records else {
                tracing::warn!(table = %self.url.audit_table(), "the audit table has no seal index: a router starting with no snapshot cannot judge sealed tenants' items; run `switchyard flags create-table` to add it");
                return Ok(Vec::new());
            };
            for record in records {
                match last.get(&record.tenant) {
                    Some(kept) if kept.seq >= record.seq => {}
                    _ => {
                        last.insert(record.tenant.clone(), record);
                    }
                }
            }
        }
        Ok((last.into_values())
            .filter_map(|r| r.new.filter(|flag| flag.sealed))
            .collect())
    }

    /// Turns on the fleet table's TTL on `expires_at` (kept when it is on already).
    async fn expire_fleet_records(&self) -> Result<(), StoreError> {
        let table = self.url.fleet_table();
        let current = self
            .client
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .map_err(sdk_err("describe the fleet table's TTL"))?;
        let enabled = (current.time_to_live_description())
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|s| {
                matches!(
                    s,
                    aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled
                        | aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
                )
            });
        if enabled {
            return Ok(());
        }
        let spec = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
            .attribute_name("expires_at")
            .enabled(true)
            .build()
            .map_err(build_err)?;
        self.client
            .update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(sdk_err("turn on the fleet table's TTL"))?;
        Ok(())
    }

    /// Makes the meta item of a new store, gives an existing one the identity it lacks, or
    /// rebuilds a lost one from the audit stream; never resets a store that has history.
    async fn create_meta(&self) -> Result<Created, StoreError> {
        let recorded = self.recorded_identity().await?;
        if let Some(meta) = self.raw(META).await? {
            let version = number(meta.get("version")).unwrap_or(0);
            let id = match meta.get("store_id").and_then(|v| v.as_s().ok()) {
                Some(id) => id.clone(),
                None => {
                    // A store made before identities: it gets the one its audit table
                    // records, or a new one.
                    let id = recorded.clone().unwrap_or_else(new_store_id);
                    self.client
                        .update_item()
                        .table_name(&self.url.table)
                        .key("tenant", AttributeValue::S(META.into()))
                        .update_expression("SET store_id = :id")
                        .condition_expression(
                            "attribute_exists(tenant) AND attribute_not_exists(store_id)",
                        )
                        .expression_attribute_values(":id", AttributeValue::S(id.clone()))
                        .send()
                        .await
                        .map_err(sdk_err("give the store an identity"))?;
                    id
                }
            };
            self.record_identity(&id, recorded.as_deref()).await?;
            return Ok(Created::Kept { id, version });
        }
        let latest = self.latest_seq().await?;
        if latest > 0 && !self.holds_flags().await? {
            return Err(StoreError::Remote {
                op: "create the meta item",
                source: format!(
                    "{table} holds no flags but {audit} records {latest} changes: the flags table looks recreated. Restore {table} from a backup (point-in-time recovery) and run create-table again to rebuild its {META} item, or delete {audit} too to start an empty store",
                    table = self.url.table,
                    audit = self.url.audit_table(),
                )
                .into(),
            });
        }
        let id = recorded.clone().unwrap_or_else(new_store_id);
        self.client
            .put_item()
            .table_name(&self.url.table)
            .item("tenant", AttributeValue::S(META.into()))
            .item("version", AttributeValue::N(latest.to_string()))
            .item("store_id", AttributeValue::S(id.clone()))
            .condition_expression("attribute_not_exists(tenant)")
            .send()
            .await
            .map_err(sdk_err("create the meta item"))?;
        self.record_identity(&id, recorded.as_deref()).await?;
        Ok(if latest == 0 {
            Created::New { id }
        } else {
            Created::Rebuilt {
                id,
                version: latest,
                same_identity: recorded.is_some(),
            }
        })
    }

    /// The identity the audit table records (the item `stream = "#identity"`), which outlives
    /// a lost meta item.
    async fn recorded_identity(&self) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.url.audit_table())
            .key("stream", AttributeValue::S(IDENTITY.into()))
            .key("seq", AttributeValue::N("0".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err("read the store's identity"))?;
        Ok(out
            .item()
            .and_then(|i| i.get("store_id"))
            .and_then(|v| v.as_s().ok())
            .cloned())
    }

    async fn record_identity(&self, id: &str, recorded: Option<&str>) -> Result<(), StoreError> {
        if recorded == Some(id) {
            return Ok(());
        }
        self.client
            .put_item()
            .table_name(self.url.audit_table())
            .item("stream", AttributeValue::S(IDENTITY.into()))
            .item("seq", AttributeValue::N("0".into()))
            .item("store_id", AttributeValue::S(id.into()))
            .send()
            .await
            .map_err(sdk_err("record the store's identity"))?;
        Ok(())
    }

    /// The last sequence number of the audit stream (0 when it is empty).
    async fn latest_seq(&self) -> Result<u64, StoreError> {
        let out = self
            .client
            .query()
            .table_name(self.url.audit_table())
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", AttributeValue::S(STREAM.into()))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err("read the last audit record"))?;
        Ok(out
            .items()
            .first()
            .and_then(|i| number(i.get("seq")))
            .unwrap_or(0))
    }

    /// True when the flags table holds an item other than the meta item.
    async fn holds_flags(&self) -> Result<bool, StoreError> {
        let out = self
            .client
            .scan()
            .table_name(&self.url.table)
            .limit(2)
            .send()
            .await
            .map_err(sdk_err("scan flags"))?;
        Ok(out.items().iter().any(|i| {
            i.get("tenant")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                != Some(META)
        }))
    }

    /// Stamps the store as adopted by an operator: routers that refused it (another identity,
    /// or an older version than their snapshot) load it whole at their next poll.
    pub async fn adopt(&self, by: &str, reason: &str) -> Result<Meta, StoreError> {
        let adopted_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.client
            .update_item()
            .table_name(&self.url.table)
            .key("tenant", AttributeValue::S(META.into()))
            .update_expression(
                "SET adopted_ms = :ms, adopted_by = :by, adopted_reason = :why",
            )
            .condition_expression("attribute_exists(store_id)")
            .expression_attribute_values(":ms", AttributeValue::N(adopted_ms.to_string()))
            .expression_attribute_values(":by", AttributeValue::S(by.into()))
            .expression_attribute_values(":why", AttributeValue::S(reason.into()))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception())
                {
                    StoreError::Remote {
                        op: "adopt the store",
                        source: format!(
                            "table {} has no identity yet: run `switchyard flags create-table` first",
                            self.url.table
                        )
                        .into(),
                    }
                } else {
                    sdk_err("adopt the store")(e)
                }
            })?;
        self.meta().await
    }

    async fn wait_active(&self, table: &str) -> Result<(), StoreError> {
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(sdk_err("describe table"))?;
            let status = out
                .table()
                .and_then(|t| t.table_status())
                .map(|s| s.as_str().to_owned());
            if status.as_deref() == Some("ACTIVE") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(StoreError::Remote {
            op: "wait for table",
            source: format!("table {table} is not active after 2 minutes").into(),
        })
    }

    /// The store's version: one small consistent read.
    pub async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.meta().await?.version)
    }

    /// The store's version and identity: one small consistent read.
    pub async fn meta(&self) -> Result<Meta, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.url.table)
            .key("tenant", AttributeValue::S(META.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err("read meta version"))?;
        self.reads.gets.fetch_add(1, Ordering::Relaxed);
        let Some(item) = out.item() else {
            return Err(StoreError::Remote {
                op: "read meta version",
                source: format!(
                    "table {} has no {META} item: run `switchyard flags create-table`, which rebuilds it from the audit stream",
                    self.url.table
                )
                .into(),
            });
        };
        self.reads.items.fetch_add(1, Ordering::Relaxed);
        let version = number(item.get("version")).ok_or_else(|| StoreError::Remote {
            op: "read meta version",
            source: "the meta item's version is not a number".into(),
        })?;
        let identity = item
            .get("store_id")
            .and_then(|v| v.as_s().ok())
            .map(|id| StoreIdentity {
                id: id.clone(),
                adopted_ms: number(item.get("adopted_ms")).unwrap_or(0),
            });
        Ok(Meta { version, identity })
    }

    /// Every flag item, by a parallel scan.
    pub async fn scan_all(&self) -> Result<Vec<LoadedItem>, StoreError> {
        let segments = self.url.segments as i32;
        let mut tasks = Vec::new();
        for segment in 0..segments {
            let store = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut pages = store
                    .client
                    .scan()
                    .table_name(&store.url.table)
                    .segment(segment)
                    .total_segments(segments)
                    .consistent_read(true)
                    .into_paginator()
                    .send();
                let mut items = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(sdk_err("scan flags"))?;
                    store.reads.scans.fetch_add(1, Ordering::Relaxed);
                    for item in page.items() {
                        store.reads.items.fetch_add(1, Ordering::Relaxed);
                        if item
                            .get("tenant")
                            .and_then(|v| v.as_s().ok())
                            .map(String::as_str)
                            == Some(META)
                        {
                            continue;
                        }
                        items.push(loaded_item(item));
                    }
                }
                Ok::<_, StoreError>(items)
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("a scan task does not panic")?);
        }
        Ok(all)
    }

    /// Every flag item, by one consistent scan reading at most `pace` items a second.
    pub async fn scan_paced(&self, pace: u32) -> Result<Vec<LoadedItem>, StoreError> {
        let started = tokio::time::Instant::now();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.url.table)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut items = Vec::new();
        let mut read = 0u64;
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("scan flags"))?;
            self.reads.scans.fetch_add(1, Ordering::Relaxed);
            for item in page.items() {
                read += 1;
                if item
                    .get("tenant")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    != Some(META)
                {
                    items.push(loaded_item(item));
                }
            }
            self.reads
                .items
                .fetch_add(page.items().len() as u64, Ordering::Relaxed);
            tokio::time::sleep_until(
                started + Duration::from_secs_f64(read as f64 / f64::from(pace)),
            )
            .await;
        }
        Ok(items)
    }

    /// The audit records after `after`, in order: one consistent query (paginated).
    pub async fn changes_since(&self, after: u64) -> Result<Vec<AuditRecord>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.url.audit_table())
            .key_condition_expression("#s = :s AND seq > :v")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", AttributeValue::S(STREAM.into()))
            .expression_attribute_values(":v", AttributeValue::N(after.to_string()))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut records = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("query changes"))?;
            self.reads.queries.fetch_add(1, Ordering::Relaxed);
            for item in page.items() {
                self.reads.items.fetch_add(1, Ordering::Relaxed);
                records.push(audit_record(item));
            }
        }
        Ok(records)
    }

    /// The tenant's audit trail, oldest first.
    pub async fn history(&self, tenant: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.url.audit_table())
            .index_name(BY_TENANT)
            .key_condition_expression("tenant = :t")
            .expression_attribute_values(":t", AttributeValue::S(tenant.into()))
            .into_paginator()
            .send();
        let mut records = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("query history"))?;
            records.extend(page.items().iter().map(audit_record));
        }
        records.sort_by_key(|r| r.seq);
        Ok(records)
    }

    /// The tenant's raw item, consistent.
    async fn raw(
        &self,
        tenant: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.url.table)
            .key("tenant", AttributeValue::S(tenant.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err("read flag"))?;
        Ok(out.item)
    }

    /// What a writer needs of the tenant's stored item (its version and seal even when malformed).
    pub async fn current(&self, tenant: &str) -> Result<Current, StoreError> {
        Ok(match self.raw(tenant).await? {
            None => Current::default(),
            Some(item) => Current::from_json(&item_json(&item).unwrap_or(Value::Null)),
        })
    }

    /// What a writer needs of each tenant's stored item (a tenant with no item is absent):
    /// consistent `BatchGetItem` reads of [`PER_BATCH_GET`] keys a request, the keys DynamoDB
    /// leaves unprocessed (throttling) asked again after a pause.
    pub async fn currents(
        &self,
        tenants: &[String],
    ) -> Result<HashMap<String, Current>, StoreError> {
        let mut out = HashMap::with_capacity(tenants.len());
        let mut unique: Vec<&String> = tenants.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        for part in unique.chunks(PER_BATCH_GET) {
            let keys = (part.iter())
                .map(|t| HashMap::from([("tenant".to_owned(), AttributeValue::S((*t).clone()))]))
                .collect();
            let mut ask = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(build_err)?;
            for attempt in 0.. {
                let got = (self.client.batch_get_item())
                    .request_items(&self.url.table, ask)
                    .send()
                    .await
                    .map_err(sdk_err("read flags"))?;
                self.reads.gets.fetch_add(1, Ordering::Relaxed);
                for item in got
                    .responses()
                    .and_then(|r| r.get(&self.url.table))
                    .into_iter()
                    .flatten()
                {
                    self.reads.items.fetch_add(1, Ordering::Relaxed);
                    let Some(tenant) = item.get("tenant").and_then(|t| t.as_s().ok()) else {
                        continue;
                    };
                    let current = Current::from_json(&item_json(item).unwrap_or(Value::Null));
                    out.insert(tenant.clone(), current);
                }
                match got.unprocessed_keys().and_then(|u| u.get(&self.url.table)) {
                    Some(left) if !left.keys().is_empty() => {
                        if attempt == 10 {
                            return Err(StoreError::Remote {
                                op: "read flags",
                                source: format!(
                                    "DynamoDB left {} key(s) unread after 10 tries (throttled)",
                                    left.keys().len()
                                )
                                .into(),
                            });
                        }
                        ask = left.clone();
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
                    }
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    pub async fn get(&self, tenant: &str) -> Result<Option<FlagItem>, StoreError> {
        match self.raw(tenant).await? {
            None => Ok(None),
            Some(item) => loaded_item(&item)
                .item
                .map(Some)
                .map_err(|(t, e)| StoreError::Item {
                    tenant: t.unwrap_or_else(|| tenant.into()),
                    source: e,
                }),
        }
    }

    /// Applies one write in one transaction: the flag, its audit record and the version bump.
    /// A race with a write to another tenant is retried; a race on the same tenant is a
    /// conflict (when the writer named the version it read) naming the winner.
    pub async fn write(&self, write: &FlagWrite, targets: Option<&Targets>) -> Written {
        let mut results = self.write_many(std::slice::from_ref(write), targets).await;
        results.pop().expect("one result a write")
    }

    /// Applies writes [`PER_TRANSACTION`] tenants at a time, each transaction bumping the
    /// version once by as many changes as it holds (each change keeping its own sequence
    /// number and audit record), so a batch of a thousand tenants takes about twenty round
    /// trips, not three thousand. Each tenant's result is its own: a write whose check fails
    /// (a seal, a conflict on the version it named) is left out and the rest of its
    /// transaction is sent again.
    pub async fn write_many(
        &self,
        writes: &[FlagWrite],
        targets: Option<&Targets>,
    ) -> Vec<Written> {
        let mut results: Vec<Option<Written>> =
            std::iter::repeat_with(|| None).take(writes.len()).collect();
        let indices: Vec<usize> = (0..writes.len()).collect();
        for chunk in indices.chunks(PER_TRANSACTION) {
            let mut pending = chunk.to_vec();
            let mut attempts = 0;
            while !pending.is_empty() {
                attempts += 1;
                if attempts > 20 {
                    for i in pending.drain(..) {
                        results[i] = Some(Err(StoreError::Remote {
                            op: "write flag",
                            source: "the store's version kept moving under 20 attempts; try again"
                                .into(),
                        }));
                    }
                    break;
                }
                match self.write_chunk(writes, &pending, targets).await {
                    Chunk::Written(done) => {
                        for (i, r) in pending.drain(..).zip(done) {
                            results[i] = Some(Ok(r));
                        }
                    }
                    Chunk::Retry(settled) => {
                        for (i, r) in settled {
                            results[i] = Some(r);
                            pending.retain(|p| *p != i);
                        }
                    }
                    Chunk::Failed(e) => {
                        // The same cause for each (the error itself goes to the last).
                        let cause = crate::error::Chain(&e).to_string();
                        let last = pending.pop().expect("a chunk has a write");
                        for i in pending.drain(..) {
                            results[i] = Some(Err(StoreError::Remote {
                                op: "write flag",
                                source: cause.clone().into(),
                            }));
                        }
                        results[last] = Some(Err(e));
                    }
                }
            }
        }
        (results.into_iter())
            .map(|r| r.expect("every write gets a result"))
            .collect()
    }

    /// One transaction for the writes at `pending`: the version bump, then each tenant's flag
    /// and audit record.
    async fn write_chunk(
        &self,
        writes: &[FlagWrite],
        pending: &[usize],
        targets: Option<&Targets>,
    ) -> Chunk {
        let version = match self.version().await {
            Ok(v) => v,
            Err(e) => return Chunk::Failed(e),
        };
        // One consistent batch read of every tenant in the transaction.
        let tenants: Vec<String> = pending.iter().map(|&i| writes[i].tenant.clone()).collect();
        let mut read = match self.currents(&tenants).await {
            Ok(read) => read,
            Err(e) => return Chunk::Failed(e),
        };
        let currents: Vec<Current> = (tenants.iter())
            .map(|t| read.remove(t).unwrap_or_default())
            .collect();
        // Checked before anything is sent: a refused write leaves the transaction.
        let now = now_secs();
        let mut refused = Vec::new();
        let mut nexts = Vec::with_capacity(pending.len());
        for (&i, current) in pending.iter().zip(&currents) {
            match writes[i].apply(current, targets, now) {
                Ok(next) => nexts.push(next),
                Err(e) => refused.push((i, Err(e))),
            }
        }
        if !refused.is_empty() {
            return Chunk::Retry(refused);
        }
        let last = version + pending.len() as u64;
        let bump = Update::builder()
            .table_name(&self.url.table)
            .key("tenant", AttributeValue::S(META.into()))
            .update_expression("SET version = :next")
            .condition_expression("version = :cur")
            .expression_attribute_values(":next", AttributeValue::N(last.to_string()))
            .expression_attribute_values(":cur", AttributeValue::N(version.to_string()))
            .build()
            .map_err(build_err);
        let mut items = vec![match bump {
            Ok(b) => TransactWriteItem::builder().update(b).build(),
            Err(e) => return Chunk::Failed(e),
        }];
        for (n, ((&i, current), next)) in pending.iter().zip(&currents).zip(&nexts).enumerate() {
            let seq = version + 1 + n as u64;
            match self.change_items(&writes[i], current, next, seq) {
                Ok([flag, audit]) => items.extend([flag, audit]),
                Err(e) => return Chunk::Failed(e),
            }
        }
        let result = (self.client.transact_write_items())
            .set_transact_items(Some(items))
            .send()
            .await;
        let e = match result {
            Ok(_) => {
                return Chunk::Written(currents.into_iter().map(|c| c.item).zip(nexts).collect());
            }
            Err(e) => e,
        };
        let reasons: Vec<Option<String>> = e
            .as_service_error()
            .and_then(|s| match s {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                    Some(c.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect())
                }
                _ => None,
            })
            .unwrap_or_default();
        let failed = |at: usize| {
            reasons.get(at).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed")
        };
        // A tenant changed under us: a conflict if the writer named a version, else read
        // again and re-check (a seal may have appeared).
        let mut conflicts = Vec::new();
        for (n, (&i, current)) in pending.iter().zip(&currents).enumerate() {
            if failed(1 + 2 * n) && writes[i].expect_version.is_some() {
                let now = self.current(&writes[i].tenant).await;
                conflicts.push((
                    i,
                    Err(match now {
                        Ok(now) => StoreError::Conflict {
                            tenant: writes[i].tenant.clone(),
                            expected: current.version,
                            actual: now.version,
                            by: now.updated_by,
                        },
                        Err(e) => e,
                    }),
                ));
            }
        }
        let flag_failed = (0..pending.len()).any(|n| failed(1 + 2 * n));
        if !conflicts.is_empty() || flag_failed {
            return Chunk::Retry(conflicts);
        }
        if failed(0)
            || reasons
                .iter()
                .any(|r| r.as_deref() == Some("TransactionConflict"))
        {
            return Chunk::Retry(Vec::new()); // another write took this version: take the next
        }
        if let Some(n) = (0..pending.len()).find(|n| failed(2 + 2 * n)) {
            return Chunk::Failed(StoreError::Remote {
                op: "write flag",
                source: format!(
                    "{audit} already holds change {}, so the version in {table}'s {META} item ({version}) is behind its audit stream ({META} was reset or edited by hand). Nothing was written. Run `switchyard flags create-table` to check the store, and `switchyard flags adopt` once it is right",
                    version + 1 + n as u64,
                    audit = self.url.audit_table(),
                    table = self.url.table,
                )
                .into(),
            });
        }
        if !reasons.is_empty() {
            let worst = |first: usize| {
                (first..reasons.len())
                    .step_by(2)
                    .map(|at| reasons.get(at))
                    .find(|r| !matches!(r.and_then(|r| r.as_deref()), None | Some("None")))
                    .flatten()
            };
            return Chunk::Failed(StoreError::Remote {
                op: "write flag",
                source: format!(
                    "DynamoDB cancelled the write (the {META} version bump: {}; the flags: {}; the audit records: {}). Nothing was written",
                    reason_words(reasons.first()),
                    reason_words(worst(1)),
                    reason_words(worst(2)),
                )
                .into(),
            });
        }
        Chunk::Failed(sdk_err("write flag")(e))
    }

    /// A change's two items: the flag (conditional on the tenant's version) and its audit
    /// record at `seq` (conditional on the sequence number being free).
    fn change_items(
        &self,
        write: &FlagWrite,
        current: &Current,
        next: &FlagItem,
        seq: u64,
    ) -> Result<[TransactWriteItem; 2], StoreError> {
        let json = |item: &FlagItem| serde_json::to_string(item).expect("a flag item serialises");
        let fresh = current.version == 0 && current.item.is_none();
        let mut put = Put::builder()
            .table_name(&self.url.table)
            .set_item(Some(to_item(
                &serde_json::to_value(next).expect("a flag item serialises"),
            )));
        put = match fresh {
            true => put.condition_expression("attribute_not_exists(tenant)"),
            false => put
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(current.version.to_string())),
        };
        let mut audit = HashMap::from([
            ("stream".to_owned(), AttributeValue::S(STREAM.into())),
            ("seq".to_owned(), AttributeValue::N(seq.to_string())),
            ("tenant".to_owned(), AttributeValue::S(write.tenant.clone())),
            ("new".to_owned(), AttributeValue::S(json(next))),
            ("by".to_owned(), AttributeValue::S(write.by.clone())),
            (
                "at".to_owned(),
                AttributeValue::S(next.updated_at.clone().unwrap_or_default()),
            ),
            ("reason".to_owned(), AttributeValue::S(write.reason.clone())),
        ]);
        if let Some(old) = &current.item {
            audit.insert("old".into(), AttributeValue::S(json(old)));
        }
        // In the sparse seal index: a record that seals the tenant or changes a sealed one.
        if next.sealed || current.sealed {
            let shard = AttributeValue::S(seal_shard(&write.tenant));
            audit.insert("seal_shard".into(), shard);
        }
        let record = Put::builder()
            .table_name(self.url.audit_table())
            .set_item(Some(audit))
            .condition_expression("attribute_not_exists(seq)")
            .build()
            .map_err(build_err)?;
        Ok([
            TransactWriteItem::builder()
                .put(put.build().map_err(build_err)?)
                .build(),
            TransactWriteItem::builder().put(record).build(),
        ])
    }
}

/// Tenants one transaction writes at most: each takes its flag and its audit record, and the
/// version bump is the 99th of DynamoDB's 100 actions.
pub const PER_TRANSACTION: usize = 49;

/// Keys one `BatchGetItem` asks for at most (DynamoDB's limit).
pub const PER_BATCH_GET: usize = 100;

/// One write's outcome: the tenant's old item and new one, or why not.
type Written = Result<(Option<FlagItem>, FlagItem), StoreError>;

/// What one transaction of [`DynamoStore::write_many`] did.
enum Chunk {
    /// Every write at the pending places: each tenant's old item and new one.
    Written(Vec<(Option<FlagItem>, FlagItem)>),
    /// Nothing was written; these writes are settled (refused), the rest are sent again.
    Retry(Vec<(usize, Written)>),
    /// Nothing was written, and nothing pending will be: every one fails so.
    Failed(StoreError),
}

fn ignore_existing<E>(
    result: Result<(), aws_sdk_dynamodb::error::SdkError<E>>,
    op: &'static str,
) -> Result<(), StoreError>
where
    E: std::error::Error + Send + Sync + 'static + aws_sdk_dynamodb::error::ProvideErrorMetadata,
    aws_sdk_dynamodb::error::SdkError<E>: std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => {
            Ok(())
        }
        Err(e) => Err(sdk_err(op)(e)),
    }
}

/// A transaction cancellation reason in words.
fn reason_words(code: Option<&Option<String>>) -> &'static str {
    match code.and_then(|c| c.as_deref()) {
        None | Some("None") => "fine",
        Some("ConditionalCheckFailed") => "its condition failed",
        Some("ItemCollectionSizeLimitExceeded") => "too large",
        Some("TransactionConflict") => "another write was in progress",
        Some("ProvisionedThroughputExceeded") | Some("ThrottlingError") => "throttled",
        Some("ValidationError") => "refused as invalid",
        Some(_) => "refused",
    }
}

fn number(v: Option<&AttributeValue>) -> Option<u64> {
    v.and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

/// An item's attributes as JSON, for the flag item's own parser and its error messages.
fn item_json(item: &HashMap<String, AttributeValue>) -> Result<Value, String> {
    item.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                av_json(v).map_err(|e| format!("attribute {k:?}: {e}"))?,
            ))
        })
        .collect::<Result<serde_json::Map<_, _>, String>>()
        .map(Value::Object)
}

fn av_json(v: &AttributeValue) -> Result<Value, String> {
    Ok(match v {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => serde_json::from_str::<serde_json::Number>(n)
            .map(Value::Number)
            .map_err(|_| format!("{n:?} is not a number"))?,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(m) => item_json(m).map_err(|e| e.to_string())?,
        AttributeValue::L(l) => Value::Array(l.iter().map(av_json).collect::<Result<_, _>>()?),
        _ => return Err("an attribute type flags do not use".into()),
    })
}

fn to_item(v: &Value) -> HashMap<String, AttributeValue> {
    match v {
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), json_av(v))).collect(),
        _ => HashMap::new(),
    }
}

fn json_av(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(json_av).collect()),
        Value::Object(_) => AttributeValue::M(to_item(v)),
    }
}

fn loaded_item(item: &HashMap<String, AttributeValue>) -> LoadedItem {
    let tenant = item.get("tenant").and_then(|v| v.as_s().ok()).cloned();
    let location = format!("item {}", tenant.as_deref().unwrap_or("(no tenant)"));
    let parsed = item_json(item)
        .map_err(|e| (tenant.clone(), ItemError::Parse(e)))
        .and_then(|json| {
            crate::model::parse_flag_item(json).map_err(|e| (tenant.clone(), ItemError::Parse(e)))
        });
    LoadedItem {
        location,
        item: parsed,
    }
}

/// One element of a table's or an index's key.
fn key(name: &str, t: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .map_err(build_err)
}

/// The audit table's sparse seal index (see the module's doc).
fn seal_index() -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(SEALED)
        .key_schema(key("seal_shard", KeyType::Hash)?)
        .key_schema(key("seq", KeyType::Range)?)
        .projection(seal_projection())
        .build()
        .map_err(build_err)
}

fn seal_projection() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::Include)
        .non_key_attributes("tenant")
        .non_key_attributes("new")
        .build()
}

fn audit_record(item: &HashMap<String, AttributeValue>) -> AuditRecord {
    let s = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let flag = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .map(|j| match serde_json::from_str::<Value>(j) {
                Ok(json) => crate::model::parse_flag_item(json),
                Err(e) => Err(e.to_string()),
            })
    };
    let (new, new_unreadable) = match flag("new") {
        None => (None, None),
        Some(Ok(item)) => (Some(item), None),
        Some(Err(e)) => (None, Some(e)),
    };
    AuditRecord {
        seq: number(item.get("seq")).unwrap_or(0),
        tenant: s("tenant"),
        old: flag("old").and_then(Result::ok),
        new,
        by: s("by"),
        at: s("at"),
        reason: s("reason"),
        new_unreadable,
    }
}

/// The DynamoDB store as a reload source: a full scan first, then deltas from the audit stream.
/// A store whose identity changed or whose version went back is scanned whole again, for the
/// reloader to judge (see [`crate::identity`]). Every reconcile interval the table is scanned
/// whole again (consistent, paced), so a router converges on what the table holds however it
/// was written, and changes no audit record explains are reported as out of band.
#[derive(Debug)]
pub struct DynamoSource {
    store: DynamoStore,
    /// The meta the router last read; `None` until the first full load.
    known: Option<Meta>,
    reconcile: Option<Reconcile>,
}

/// When and how fast the source rescans the table.
#[derive(Debug)]
struct Reconcile {
    interval: Duration,
    /// Items read a second, at most: a million tenants take 20 s at the default.
    pace: u32,
    next: tokio::time::Instant,
}

/// The default pace of a reconcile scan, items a second.
pub const RECONCILE_PACE: u32 = 50_000;

impl DynamoSource {
    pub fn new(store: DynamoStore) -> Self {
        DynamoSource {
            store,
            known: None,
            reconcile: None,
        }
    }

    /// Rescans the table about every `interval` (the first time at a random point of the
    /// first interval, so a fleet started together does not scan together), reading at most
    /// `pace` items a second.
    pub fn reconcile_every(mut self, interval: Duration, pace: u32) -> Self {
        let first = interval.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        self.reconcile = Some(Reconcile {
            interval,
            pace: pace.max(1),
            next: tokio::time::Instant::now() + first,
        });
        self
    }

    fn reconcile_due(&self) -> bool {
        self.reconcile
            .as_ref()
            .is_some_and(|r| tokio::time::Instant::now() >= r.next)
    }

    /// Reads the whole table (consistent, paced), then every audit record after the version
    /// the router holds: audited writes that raced the scan win over what it read, and name
    /// the tenants whose change is explained. The records are read after the scan, so any
    /// audited write the scan saw is among them (a write and its record are one transaction).
    async fn reconcile(&mut self, known: u64, meta: Meta) -> Result<SourceUpdate, StoreError> {
        let pace = self.reconcile.as_ref().map_or(RECONCILE_PACE, |r| r.pace);
        let mut items = self.store.scan_paced(pace).await?;
        let records = self.store.changes_since(known).await?;
        let mut at: HashMap<String, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Ok(item) = &item.item {
                at.insert(item.tenant.clone(), i);
            }
        }
        let mut audited = std::collections::HashSet::new();
        let mut version = meta.version;
        for r in records {
            version = version.max(r.seq);
            let tenant = r.tenant.clone();
            let loaded = audit_item(r);
            match at.get(&tenant) {
                Some(&i) => items[i] = loaded,
                None => {
                    at.insert(tenant.clone(), items.len());
                    items.push(loaded);
                }
            }
            audited.insert(tenant);
        }
        if let Some(r) = &mut self.reconcile {
            r.next = tokio::time::Instant::now() + r.interval;
        }
        self.known = Some(Meta {
            version,
            identity: meta.identity.clone(),
        });
        Ok(SourceUpdate::Reconcile {
            load: Load {
                version,
                items,
                identity: meta.identity,
                seals: Vec::new(),
            },
            audited,
        })
    }
}

/// An audit record's new flag as a loaded item.
fn audit_item(record: AuditRecord) -> LoadedItem {
    LoadedItem {
        location: format!("audit seq {}", record.seq),
        item: match (record.new, record.new_unreadable) {
            (Some(item), _) => Ok(item),
            (None, why) => Err((
                Some(record.tenant),
                ItemError::Parse(match why {
                    Some(why) => format!("the audit record's new value is unreadable: {why}"),
                    None => "the audit record has no new value".into(),
                }),
            )),
        },
    }
}

impl Source for DynamoSource {
    fn describe(&self) -> String {
        self.store.describe()
    }

    async fn poll(&mut self) -> Result<Option<SourceUpdate>, StoreError> {
        let meta = self.store.meta().await?;
        match &self.known {
            Some(known) if known.identity == meta.identity && self.reconcile_due() => {
                let known = known.version.min(meta.version);
                self.reconcile(known, meta).await.map(Some)
            }
            Some(known) if known.identity == meta.identity && meta.version == known.version => {
                Ok(None)
            }
            Some(known) if known.identity == meta.identity && meta.version > known.version => {
                let records = self.store.changes_since(known.version).await?;
                let latest = records.iter().map(|r| r.seq).max().unwrap_or(meta.version);
                let items = records.into_iter().map(audit_item).collect();
                let version = latest.max(meta.version);
                let identity = meta.identity.clone();
                self.known = Some(Meta {
                    version,
                    identity: identity.clone(),
                });
                Ok(Some(SourceUpdate::Delta(Load {
                    version,
                    items,
                    identity,
                    seals: Vec::new(),
                })))
            }
            _ => {
                // The first load, or another store: read the version before the scan, so a
                // write during the scan shows up again in the next delta (replaying it is
                // harmless).
                let items = self.store.scan_all().await?;
                let seals = self.store.audited_seals().await?;
                self.known = Some(meta.clone());
                Ok(Some(SourceUpdate::Full(Load {
                    version: meta.version,
                    items,
                    identity: meta.identity,
                    seals,
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse_garbage() {
        let u = DynamoUrl::parse(
            "dynamodb://flags?region=eu-west-1&endpoint=http://127.0.0.1:8000&segments=8",
        )
        .unwrap();
        assert_eq!(
            u,
            DynamoUrl {
                table: "flags".into(),
                region: Some("eu-west-1".into()),
                endpoint: Some("http://127.0.0.1:8000".into()),
                segments: 8
            }
        );
        assert!(u.is_local());
        assert_eq!(u.audit_table(), "flags-audit");
        assert!(
            !DynamoUrl::parse("dynamodb://flags?endpoint=https://dynamodb.eu-west-1.amazonaws.com")
                .unwrap()
                .is_local()
        );
        for (bad, want) in [
            ("dynamodb://x", "table name"),
            ("dynamodb://flags?colour=blue", "unknown parameter"),
            ("dynamodb://flags?endpoint=127.0.0.1", "http:// or https://"),
            ("dynamodb://flags?segments=0", "segments"),
        ] {
            assert!(DynamoUrl::parse(bad).unwrap_err().contains(want), "{bad}");
        }
    }

    #[test]
    fn items_round_trip_through_attributes() {
        let json = serde_json::json!({"tenant":"acme","mode":"split","weights":{"legacy":90,"new":10},"sealed":true,"version":3,"updated_by":"ops"});
        let item = to_item(&json);
        assert_eq!(
            item["weights"],
            AttributeValue::M(HashMap::from([
                ("legacy".into(), AttributeValue::N("90".into())),
                ("new".into(), AttributeValue::N("10".into()))
            ]))
        );
        assert_eq!(item_json(&item).unwrap(), json);
        let loaded = loaded_item(&item);
        assert_eq!(loaded.item.unwrap().version, 3);
    }

    #[test]
    fn a_malformed_item_is_refused_with_its_tenant() {
        let item = HashMap::from([
            ("tenant".to_owned(), AttributeValue::S("acme".into())),
            ("taget".to_owned(), AttributeValue::S("new".into())),
        ]);
        let (tenant, err) = loaded_item(&item).item.unwrap_err();
        assert_eq!(tenant.as_deref(), Some("acme"));
        assert!(err.to_string().contains("taget"));
    }
}
