//! The file flag store: one JSON document, the embedded default that needs no AWS.
//!
//! ```json
//! {
//!   "version": 7,
//!   "items": [
//!     {"tenant":"*","mode":"pinned","target":"legacy","version":1},
//!     {"tenant":"acme","mode":"pinned","target":"new","version":3,"updated_by":"ops","updated_at":"2026-11-22T05:00:00Z","reason":"batch 1"}
//!   ]
//! }
//! ```
//!
//! Readers parse each item on its own, so one malformed item is rejected alone. Writers take an
//! exclusive lock on `PATH.lock`, change only the item they write (a malformed neighbour is kept
//! as it is, byte for byte in meaning), bump the document's version and replace the file
//! atomically (write a temporary file, fsync, rename), so a router never reads half a write.
//! The watcher notices a change by the file's metadata and re-reads files changed too recently
//! for their timestamp to be trusted, so two edits in one clock tick are both seen.

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::error::{ItemError, StoreError};
use crate::identity::StoreIdentity;
use crate::model::{FlagItem, Targets, now_secs};
use crate::snapshot::{Load, LoadedItem};
use crate::source::{Source, Update};
use crate::write::{Current, FlagWrite};

#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

/// The parsed document, items kept as raw JSON so a writer never drops one it cannot parse.
#[derive(Debug, Default)]
struct Document {
    version: u64,
    items: Vec<Value>,
    /// The identity of the store a local copy was taken from (a flag file has none).
    store: Option<StoreIdentity>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the file was last written.
    pub fn modified(&self) -> Option<SystemTime> {
        fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    /// What tells one state of the file from another without reading it: its inode (every
    /// write replaces the file by a rename), size and modification time.
    pub fn stamp(&self) -> Option<(u64, u64, SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&self.path).ok()?;
        Some((m.ino(), m.len(), m.modified().ok()?))
    }

    /// Reads the whole store: its version and every item, each parsed or refused on its own.
    pub fn load(&self) -> Result<Load, StoreError> {
        let bytes = fs::read(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.parse_load(&bytes)
    }

    fn parse_load(&self, bytes: &[u8]) -> Result<Load, StoreError> {
        // The common case, a well-formed document, parses each item straight from the file's
        // bytes. Anything else takes the slower path that names what is wrong.
        if let Ok(doc) = serde_json::from_slice::<RawDocument>(bytes) {
            let items = (doc.items.iter().enumerate())
                .map(|(i, raw)| {
                    crate::background::give_way_at(i);
                    LoadedItem {
                        location: format!("items[{i}]"),
                        item: parse_raw_item(raw),
                    }
                })
                .collect();
            return Ok(Load {
                version: doc.version,
                items,
                identity: doc.store,
                seals: Vec::new(),
            });
        }
        let doc = self.parse_document(bytes)?;
        let items = doc
            .items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| LoadedItem {
                location: format!("items[{i}]"),
                item: parse_item(raw),
            })
            .collect();
        Ok(Load {
            version: doc.version,
            items,
            identity: doc.store,
            seals: Vec::new(),
        })
    }

    fn parse_document(&self, bytes: &[u8]) -> Result<Document, StoreError> {
        let format = |reason: String| StoreError::Format {
            path: self.path.clone(),
            reason,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(format(
                "the top level must be an object with \"version\" and \"items\"".into(),
            ));
        };
        let version = match top.remove("version") {
            None => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format(format!("\"version\" must be a whole number, not {v}")))?,
        };
        let items = match top.remove("items") {
            None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(format(format!("\"items\" must be an array, not {other}")));
            }
        };
        let store = match top.remove("store") {
            None => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| {
                format(format!(
                    "\"store\" must be {{\"id\": ..., \"adopted_ms\": ...}}: {e}"
                ))
            })?),
        };
        if let Some(key) = top.keys().next() {
            return Err(format(format!(
                "unknown top-level key {key:?} (expected \"version\" and \"items\")"
            )));
        }
        Ok(Document {
            version,
            items,
            store,
        })
    }

    /// The tenant's stored item, if it has one that parses.
    pub fn get(&self, tenant: &str) -> Result<Option<FlagItem>, StoreError> {
        let mut found = Ok(None);
        self.scan(|loaded| {
            found = match loaded.item {
                Ok(item) if item.tenant == tenant => Ok(Some(item)),
                Err((Some(t), e)) if t == tenant => Err(StoreError::Item {
                    tenant: t,
                    source: e,
                }),
                _ => return ControlFlow::Continue(()),
            };
            ControlFlow::Break(())
        })?;
        found
    }

    /// Hands each item, parsed or refused, to `each` in the file's order without holding them
    /// all (a million-tenant file is read in about a tenth of the memory [`Self::load`] takes);
    /// `each` may stop the scan. Returns the store's version.
    pub fn scan(
        &self,
        mut each: impl FnMut(LoadedItem) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        let bytes = fs::read(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        if let Ok(doc) = serde_json::from_slice::<RawDocument>(&bytes) {
            for (i, raw) in doc.items.iter().enumerate() {
                let loaded = LoadedItem {
                    location: format!("items[{i}]"),
                    item: parse_raw_item(raw),
                };
                if each(loaded).is_break() {
                    break;
                }
            }
            return Ok(doc.version);
        }
        // A malformed document: the slow path names what is wrong.
        let load = self.parse_load(&bytes)?;
        for loaded in load.items {
            if each(loaded).is_break() {
                break;
            }
        }
        Ok(load.version)
    }

    /// Applies one write under the store's lock and returns (previous item, new item).
    pub fn write(
        &self,
        write: &FlagWrite,
        targets: Option<&Targets>,
    ) -> Result<(Option<FlagItem>, FlagItem), StoreError> {
        self.write_many(std::slice::from_ref(write), targets)?
            .pop()
            .expect("one result per write")
    }

    /// Applies several writes under one lock and one atomic replace. Each write is checked on
    /// its own against the item as the earlier writes left it: a refused write changes nothing
    /// and the others still apply. The outer error means nothing was written at all.
    #[allow(clippy::type_complexity)]
    pub fn write_many(
        &self,
        writes: &[FlagWrite],
        targets: Option<&Targets>,
    ) -> Result<Vec<Result<(Option<FlagItem>, FlagItem), StoreError>>, StoreError> {
        let _lock = self.lock()?;
        let mut doc = self.read_document()?;
        let mut positions: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, v) in doc.items.iter().enumerate() {
            if let Some(t) = v.get("tenant").and_then(Value::as_str) {
                positions.entry(t.to_owned()).or_default().push(i);
            }
        }
        let now = now_secs();
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let at = positions.get(&write.tenant).map_or(&[][..], Vec::as_slice);
            if at.len() > 1 {
                results.push(Err(StoreError::Item {
                    tenant: write.tenant.clone(),
                    source: ItemError::Duplicate(write.tenant.clone()),
                }));
                continue;
            }
            let current = at
                .first()
                .map(|&i| Current::from_json(&doc.items[i]))
                .unwrap_or_default();
            let next = match write.apply(&current, targets, now) {
                Ok(next) => next,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let value = serde_json::to_value(&next).expect("a flag item always serialises");
            match at.first() {
                Some(&i) => doc.items[i] = value,
                None => {
                    positions.insert(write.tenant.clone(), vec![doc.items.len()]);
                    doc.items.push(value);
                }
            }
            results.push(Ok((current.item, next)));
        }
        if results.iter().any(Result::is_ok) {
            doc.version += 1;
            self.replace(&doc)?;
        }
        Ok(results)
    }

    /// What writers need of every stored item, by tenant (a duplicated tenant: its last copy).
    pub fn currents(&self) -> Result<std::collections::HashMap<String, Current>, StoreError> {
        let doc = self.read_document()?;
        Ok(doc
            .items
            .iter()
            .filter_map(|v| {
                let tenant = v.get("tenant").and_then(Value::as_str)?;
                Some((tenant.to_owned(), Current::from_json(v)))
            })
            .collect())
    }

    /// The document as stored; a missing file is an empty store.
    fn read_document(&self) -> Result<Document, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => self.parse_document(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Document::default()),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes a fresh document holding `items` at version 1, unless the file already exists.
    pub fn create(&self, items: &[FlagItem]) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        if self.path.exists() {
            return Ok(());
        }
        let doc = Document {
            version: 1,
            store: None,
            items: items
                .iter()
                .map(|i| serde_json::to_value(i).expect("a flag item always serialises"))
                .collect(),
        };
        self.replace(&doc)
    }

    /// Replaces the whole document (the local copy of a remote store), under the lock.
    pub fn replace_all(
        &self,
        version: u64,
        store: Option<&StoreIdentity>,
        items: &[FlagItem],
    ) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let doc = Document {
            version,
            store: store.cloned(),
            items: (items.iter().enumerate())
                .map(|(i, item)| {
                    crate::background::give_way_at(i);
                    serde_json::to_value(item).expect("a flag item always serialises")
                })
                .collect(),
        };
        self.replace(&doc)
    }

    fn lock(&self) -> Result<fs::File, StoreError> {
        let lock_path = sibling(&self.path, ".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::Write {
                path: lock_path.clone(),
                source,
            })?;
        file.lock().map_err(|source| StoreError::Write {
            path: lock_path,
            source,
        })?;
        Ok(file)
    }

    /// Replaces the file atomically: a reader sees the old document or the new one, never a mix.
    fn replace(&self, doc: &Document) -> Result<(), StoreError> {
        let write_err = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let tmp = sibling(&self.path, &format!(".tmp.{}", std::process::id()));
        let result = (|| {
            let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
            // One item a line: readable by people and diffs alike.
            write!(out, "{{\n  \"version\": {},", doc.version)?;
            if let Some(store) = &doc.store {
                write!(out, "\n  \"store\": ")?;
                serde_json::to_writer(&mut out, store)?;
                write!(out, ",")?;
            }
            write!(out, "\n  \"items\": [")?;
            for (i, item) in doc.items.iter().enumerate() {
                crate::background::give_way_at(i);
                let sep = if i == 0 { "" } else { "," };
                write!(out, "{sep}\n    ")?;
                serde_json::to_writer(&mut out, item)?;
            }
            write!(out, "\n  ]\n}}\n")?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A well-formed document, its items still unparsed text borrowed from the file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument<'a> {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    store: Option<StoreIdentity>,
    #[serde(borrow, default, deserialize_with = "raw_items")]
    items: Vec<&'a serde_json::value::RawValue>,
}

/// The document's items as raw JSON, giving way between them: finding 100,000 items in a file
/// is milliseconds of work.
fn raw_items<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<&'de serde_json::value::RawValue>, D::Error> {
    struct Items;
    impl<'de> serde::de::Visitor<'de> for Items {
        type Value = Vec<&'de serde_json::value::RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of flag items")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                crate::background::give_way_at(items.len());
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Items)
}

/// The file's bytes and a hash of them, read and hashed in slices with [`give_way`] between:
/// one read of a large file is a millisecond in the kernel, which does not preempt it, and
/// hashing it whole is as long again.
///
/// [`give_way`]: crate::background::give_way
fn read_and_hash(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::Read;
    const SLICE: usize = 64 * 1024;
    let mut file = fs::File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut bytes = Vec::with_capacity(size);
    while (&mut file).take(SLICE as u64).read_to_end(&mut bytes)? > 0 {
        crate::background::give_way();
    }
    // Slices of fixed bounds, so the same bytes always hash alike.
    let mut h = foldhash::quality::FixedState::with_seed(0).build_hasher();
    for slice in bytes.chunks(SLICE) {
        h.write(slice);
        crate::background::give_way();
    }
    Ok((bytes, h.finish()))
}

fn parse_raw_item(
    raw: &serde_json::value::RawValue,
) -> Result<FlagItem, (Option<String>, ItemError)> {
    match serde_json::from_str::<FlagItem>(raw.get()) {
        Ok(item) => Ok(item),
        // The slow path for the error: it also finds the tenant id, when there is one.
        Err(_) => parse_item(serde_json::from_str(raw.get()).unwrap_or(Value::Null)),
    }
}

/// Parses one raw item; on failure keeps the tenant id when it can be read, so the tenant can
/// keep its last good flag.
fn parse_item(raw: Value) -> Result<FlagItem, (Option<String>, ItemError)> {
    let tenant = raw.get("tenant").and_then(Value::as_str).map(str::to_owned);
    crate::model::parse_flag_item(raw).map_err(|e| (tenant, ItemError::Parse(e)))
}

/// What the watcher compares between polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    changed: i64,
    changed_nsec: i64,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path)?;
    Ok(Fingerprint {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
        changed: m.ctime(),
        changed_nsec: m.ctime_nsec(),
    })
}

/// File timestamps move in clock ticks; a file modified this recently may change again
/// without its metadata changing, so it is read again (and compared by content) until it
/// has been quiet this long.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The file store as a reload source.
#[derive(Debug)]
pub struct FileSource {
    store: FileStore,
    last: Option<Fingerprint>,
    last_content: Option<u64>,
}

impl FileSource {
    pub fn new(store: FileStore) -> Self {
        FileSource {
            store,
            last: None,
            last_content: None,
        }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file:{}", self.store.path.display())
    }

    async fn poll(&mut self) -> Result<Option<Update>, StoreError> {
        let store = self.store.clone();
        let last = self.last;
        let last_content = self.last_content;
        // Reading and parsing a large file is blocking work: keep it off the proxy's threads.
        let outcome = crate::background::run(move || {
            let read_err = |source| StoreError::Read {
                path: store.path.clone(),
                source,
            };
            let fp = fingerprint(&store.path).map_err(read_err)?;
            let racy = fp
                .modified
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_none_or(|age| age < RACY_WINDOW);
            if Some(fp) == last && !racy {
                return Ok((fp, last_content, None));
            }
            let (bytes, content) = read_and_hash(&store.path).map_err(read_err)?;
            if Some(content) == last_content {
                return Ok((fp, last_content, None));
            }
            store
                .parse_load(&bytes)
                .map(|load| (fp, Some(content), Some(load)))
        })
        .await;
        match outcome {
            Ok((fp, content, load)) => {
                self.last = Some(fp);
                self.last_content = content;
                Ok(load.map(Update::Full))
            }
            Err(e) => {
                // Forget the fingerprint so the next poll reads the file again.
                self.last = None;
                self.last_content = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::Placing;

    fn full_version(update: Update) -> u64 {
        match update {
            Update::Full(load) => load.version,
            _ => panic!("the file source always reads the whole file"),
        }
    }

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("flags.json"));
        (dir, store)
    }

    fn set(tenant: &str, target: &str) -> FlagWrite {
        FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: None,
            tenant: tenant.into(),
            placing: Some(Placing::Pinned(target.into())),
            seal: None,
            shadow: None,
            by: "test".into(),
            reason: "test".into(),
            expect_version: None,
            force: false,
        }
    }

    #[test]
    fn writes_create_then_update_and_bump_both_versions() {
        let (_d, store) = store();
        let targets = Targets::new(["legacy", "new"]);
        let (old, new) = store.write(&set("acme", "legacy"), Some(&targets)).unwrap();
        assert!(old.is_none());
        assert_eq!(new.version, 1);
        let (old, new) = store.write(&set("acme", "new"), Some(&targets)).unwrap();
        assert_eq!(old.unwrap().target.as_deref(), Some("legacy"));
        assert_eq!(new.version, 2);
        let load = store.load().unwrap();
        assert_eq!(load.version, 2);
        assert_eq!(
            store.get("acme").unwrap().unwrap().target.as_deref(),
            Some("new")
        );
    }

    #[test]
    fn a_write_keeps_malformed_neighbours() {
        let (_d, store) = store();
        fs::write(
            store.path(),
            r#"{"version":5,"items":[{"tenant":"bad","taget":"x"},{"tenant":"ok","target":"legacy"}]}"#,
        )
        .unwrap();
        store.write(&set("ok", "new"), None).unwrap();
        let load = store.load().unwrap();
        assert_eq!(load.version, 6);
        assert_eq!(load.items.len(), 2);
        let (tenant, err) = load.items[0].item.as_ref().unwrap_err();
        assert_eq!(tenant.as_deref(), Some("bad"));
        assert!(err.to_string().contains("taget"));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let (_d, store) = store();
        let targets = Targets::new(["legacy", "new"]);
        store.write(&set("acme", "legacy"), Some(&targets)).unwrap();
        let before = fs::read(store.path()).unwrap();
        assert!(
            store
                .write(&set("acme", "nowhere"), Some(&targets))
                .is_err()
        );
        assert_eq!(fs::read(store.path()).unwrap(), before);
    }

    #[test]
    fn a_bad_item_is_rejected_alone_with_its_tenant_and_place() {
        let (_d, store) = store();
        let doc = r#"{"version":4,"items":[
            {"tenant":"acme","target":"new"},
            {"tenant":"globex","taget":"new"},
            "not an object",
            {"tenant":"initech","target":"legacy","version":2}
        ]}"#;
        fs::write(store.path(), doc).unwrap();
        let load = store.load().unwrap();
        assert_eq!(load.version, 4);
        let got: Vec<_> = (load.items.iter())
            .map(|l| match &l.item {
                Ok(item) => (
                    l.location.as_str(),
                    Some(item.tenant.clone()),
                    String::new(),
                ),
                Err((tenant, e)) => (l.location.as_str(), tenant.clone(), e.to_string()),
            })
            .collect();
        assert_eq!(got[0], ("items[0]", Some("acme".into()), String::new()));
        assert_eq!(got[1].1.as_deref(), Some("globex"));
        assert!(got[1].2.contains("taget"), "{}", got[1].2);
        assert_eq!((got[2].0, got[2].1.as_deref()), ("items[2]", None));
        assert_eq!(got[3], ("items[3]", Some("initech".into()), String::new()));
    }

    #[test]
    fn document_errors_name_what_is_wrong() {
        let (_d, store) = store();
        for (doc, want) in [
            ("[1,2]", "top level must be an object"),
            (
                r#"{"version":"x","items":[]}"#,
                "\"version\" must be a whole number",
            ),
            (r#"{"items":{}}"#, "\"items\" must be an array"),
            (
                r#"{"items":[],"extra":1}"#,
                "unknown top-level key \"extra\"",
            ),
            ("{", "EOF"),
        ] {
            fs::write(store.path(), doc).unwrap();
            let err = store.load().unwrap_err().to_string();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[tokio::test]
    async fn the_source_reports_each_change_once() {
        let (_d, store) = store();
        let targets = Targets::new(["legacy", "new"]);
        store.write(&set("acme", "legacy"), Some(&targets)).unwrap();
        let mut source = FileSource::new(store.clone());
        assert_eq!(full_version(source.poll().await.unwrap().unwrap()), 1);
        // Unchanged content, even inside the racy window, is not reported again.
        assert!(source.poll().await.unwrap().is_none());
        // Two writes in quick succession are both seen.
        store.write(&set("acme", "new"), Some(&targets)).unwrap();
        assert_eq!(full_version(source.poll().await.unwrap().unwrap()), 2);
        store.write(&set("acme", "legacy"), Some(&targets)).unwrap();
        assert_eq!(full_version(source.poll().await.unwrap().unwrap()), 3);
        fs::remove_file(store.path()).unwrap();
        assert!(matches!(source.poll().await, Err(StoreError::Read { .. })));
    }

    #[tokio::test]
    async fn a_file_of_many_slices_is_read_whole_and_a_change_in_its_last_slice_is_seen() {
        let (_d, store) = store();
        let doc = |last_target: &str| {
            let items: Vec<String> = (0..8000)
                .map(|i| {
                    let target = if i == 7999 { last_target } else { "legacy" };
                    format!(r#"{{"tenant":"t-{i:05}","target":"{target}","version":1}}"#)
                })
                .collect();
            format!(r#"{{"version":1,"items":[{}]}}"#, items.join(",\n"))
        };
        fs::write(store.path(), doc("legacy")).unwrap();
        assert!(fs::metadata(store.path()).unwrap().len() > 4 * 64 * 1024);
        let mut source = FileSource::new(store.clone());
        let Update::Full(load) = source.poll().await.unwrap().unwrap() else {
            panic!("the file source reads the whole file");
        };
        assert_eq!(load.items.len(), 8000);
        let last = load.items.last().unwrap().item.as_ref().unwrap();
        assert_eq!(
            (last.tenant.as_str(), last.target.as_deref()),
            ("t-07999", Some("legacy"))
        );

        // The same bytes again: no change. One byte near the end: a change.
        fs::write(store.path(), doc("legacy")).unwrap();
        assert!(source.poll().await.unwrap().is_none());
        fs::write(store.path(), doc("new")).unwrap();
        let Update::Full(load) = source.poll().await.unwrap().unwrap() else {
            panic!("the file source reads the whole file");
        };
        let last = load.items.last().unwrap().item.as_ref().unwrap();
        assert_eq!(last.target.as_deref(), Some("new"));
    }
}
