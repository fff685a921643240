//! `switchyard flags apply BATCH`: move many tenants at once, safely. The batch is read whole
//! and every row checked before anything is written; the plan says who moves from where to
//! where, the counts by target and the sealed tenants it touches; `--yes` then writes each
//! tenant on its own (atomic per tenant, conditional on the version the plan read). A bad row
//! is rejected alone and named; re-running a batch skips the tenants already where it says.
//!
//! Two formats, told apart by the first row:
//! - CSV: `tenant,placement[,seal]`, where placement is a target name or a split such as
//!   `legacy=90;new=10` (or `"legacy=90,new=10"` quoted), and seal is `seal`, `true`, `yes`
//!   or `1` (empty, `false`, `no` or `0`: keep the tenant's seal as it is). An optional
//!   header row (a first row with a `tenant` column) names the columns (`tenant`, `target`,
//!   `split`, `seal`, `shadow`, `jobs`) in any order; `shadow` is `TARGET:PERCENT`
//!   (`new:10`), or `none` to remove one; `jobs` is the side that runs a split tenant's
//!   scheduled jobs, or `heaviest` to leave it to the heaviest side.
//! - JSON lines: `{"tenant":"acme","target":"new","seal":true}` or
//!   `{"tenant":"globex","weights":{"legacy":90,"new":10}}` (or `"split":"legacy=90,new=10"`),
//!   with `"shadow":"new:10"` (or `"none"`) to set (or remove) a shadow and `"jobs":"new"`
//!   (or `"heaviest"`) for a split tenant's job side.
//!
//! Blank lines and lines starting with `#` are ignored in both.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use flag_store::{
    FlagItem, FlagWrite, Placing, ShadowItem, StoreError, Targets, model::validate_tenant_id,
};
use serde::Deserialize;

use flag_store::store::{Store, WriteResult};

/// One row that parsed: where the batch wants the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub tenant: String,
    pub placing: Placing,
    pub seal: bool,
    /// `Some` sets (or, holding `None`, removes) the shadow; `None` keeps it.
    pub shadow: Option<Option<ShadowItem>>,
    /// `Some` sets (or, holding `None`, returns to the heaviest side) a split tenant's job
    /// side; `None` keeps it.
    pub jobs: Option<Option<String>>,
}

/// A row left out of the batch, and why. Nothing else in the batch is affected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    pub line: usize,
    pub tenant: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "line {}: tenant {t:?}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// `switchyard flags apply`: parses, plans, prints the plan; with `--yes` writes it (with
/// `--hold-max`, as one move with a hold). Exits 2 when a row was rejected or a write failed.
pub(super) async fn command(
    batch: &Path,
    reason: String,
    by: Option<String>,
    (yes, force): (bool, bool),
    admin: Option<SocketAddr>,
    hold: super::hold::HoldArgs,
    args: &super::StoreArgs,
) -> anyhow::Result<ExitCode> {
    let text = if batch == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the batch from stdin")?
    } else {
        std::fs::read_to_string(batch)
            .with_context(|| format!("cannot read the batch {}", batch.display()))?
    };
    if reason.trim().is_empty() {
        bail!("--reason is empty; every write must say why");
    }
    if hold.hold_max.is_some() && args.json {
        bail!("--json and --hold-max do not go together: a move with a hold prints its steps");
    }
    let holding = hold.gate_url.is_some() || hold.gate_cmd.is_some();
    if hold.hold_max.is_none() && (holding || !hold.ignore_router.is_empty()) {
        bail!(
            "--gate-url, --gate-cmd and --ignore-router are for a move with a hold: add --hold-max"
        );
    }
    let by = super::author(by)?;
    let (url, targets) = super::store_url(args)?;
    if targets.is_none() {
        eprintln!(
            "note: no --config given, so target names are not checked here (routers reject unknown targets)"
        );
    }
    let store = Store::open(&url).await;
    let (rows, bad) = parse(&text);
    let mut plan = plan(&store, rows, bad, targets.as_ref(), &by, &reason, force).await?;
    if let Some(admin) = admin {
        match super::admin_json(admin, "/shadow", None).await {
            Ok(summary) => plan.match_rates = Some(super::match_rates(&summary)),
            Err(e) => eprintln!("note: no shadow match rates in the plan: {e:#}"),
        }
    }
    if !args.json {
        println!("batch {} against {}", batch.display(), store.describe());
        print!("{}", plan.render(super::describe));
    }
    if let Some(hold_max) = hold.hold_max
        && yes
        && !plan.changes.is_empty()
    {
        let flips = plan.changes.iter().map(|c| c.write.clone()).collect();
        let to = format!("the batch's placements ({})", batch.display());
        let moved = super::hold::run(
            &store,
            targets.as_ref(),
            hold.into_move(hold_max, flips, to)?,
        )
        .await?;
        return Ok(match plan.rejected.is_empty() {
            true => moved,
            false => {
                println!(
                    "{} row(s) rejected, left out of the move",
                    plan.rejected.len()
                );
                ExitCode::from(2)
            }
        });
    }
    let mut failed = Vec::new();
    let mut written = Vec::new();
    if yes && !plan.changes.is_empty() {
        let results = apply(&store, &plan, targets.as_ref()).await;
        for (change, result) in plan.changes.iter().zip(results) {
            match result {
                Ok((_, new)) => written.push(new),
                Err(e) => failed.push((
                    change.write.tenant.clone(),
                    reason_of(&change.write.tenant, &e),
                )),
            }
        }
    }
    if args.json {
        let changes: Vec<_> = plan
            .changes
            .iter()
            .map(|c| serde_json::json!({ "tenant": c.write.tenant, "from": c.from, "to": c.to, "moves_sealed": c.moves_sealed }))
            .collect();
        let rejected: Vec<_> = plan
            .rejected
            .iter()
            .map(|r| serde_json::json!({ "line": r.line, "tenant": r.tenant, "reason": r.reason }))
            .collect();
        let failed_json: Vec<_> = failed
            .iter()
            .map(|(t, e)| serde_json::json!({ "tenant": t, "error": e }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "applied": yes,
                "changes": changes,
                "unchanged": plan.unchanged,
                "rejected": rejected,
                "written": written,
                "failed": failed_json,
            }))?
        );
    } else if !yes {
        if plan.changes.is_empty() {
            println!("nothing to write");
        } else {
            println!(
                "nothing written: re-run with --yes to write these changes ({})",
                plan.changes.len()
            );
        }
    } else {
        for (tenant, error) in &failed {
            println!("failed: tenant {tenant:?}: {error}");
        }
        println!(
            "written: {}, failed: {}, unchanged: {}, rejected: {}",
            written.len(),
            failed.len(),
            plan.unchanged.len(),
            plan.rejected.len()
        );
        if !failed.is_empty() {
            println!("re-running the same batch retries only what is not yet written");
        }
    }
    Ok(if plan.rejected.is_empty() && failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Parses a whole batch file. Duplicate tenants are rejected on every line they appear: which
/// of two rows was meant is not the tool's guess to make.
pub fn parse(text: &str) -> (Vec<Row>, Vec<BadRow>) {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let json = lines.first().is_some_and(|(_, l)| l.starts_with('{'));
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    let mut columns = Columns::default();
    for (n, (line, text)) in lines.into_iter().enumerate() {
        let parsed = if json {
            parse_json_row(text)
        } else {
            let fields = split_csv(text);
            if n == 0 && fields.iter().any(|f| f.eq_ignore_ascii_case("tenant")) {
                match Columns::from_header(&fields) {
                    Ok(c) => columns = c,
                    Err(reason) => bad.push(BadRow {
                        line,
                        tenant: None,
                        reason,
                    }),
                }
                continue;
            }
            columns.row(&fields)
        };
        match parsed {
            Ok((tenant, placing, seal, shadow, jobs)) => match validate_tenant_id(&tenant) {
                Ok(()) => rows.push(Row {
                    line,
                    tenant,
                    placing,
                    seal,
                    shadow,
                    jobs,
                }),
                Err(e) => bad.push(BadRow {
                    line,
                    tenant: Some(tenant),
                    reason: e.to_string(),
                }),
            },
            Err((tenant, reason)) => bad.push(BadRow {
                line,
                tenant,
                reason,
            }),
        }
    }
    let mut lines_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for r in &rows {
        lines_of.entry(&r.tenant).or_default().push(r.line);
    }
    let dup_lines: HashMap<String, Vec<usize>> = lines_of
        .into_iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(t, l)| (t.to_owned(), l))
        .collect();
    rows.retain(|r| match dup_lines.get(&r.tenant) {
        Some(all) => {
            bad.push(BadRow {
                line: r.line,
                tenant: Some(r.tenant.clone()),
                reason: format!(
                    "appears on lines {}; a batch names each tenant once",
                    all.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            false
        }
        None => true,
    });
    bad.sort_by_key(|b| b.line);
    (rows, bad)
}

type ParsedRow = Result<
    (
        String,
        Placing,
        bool,
        Option<Option<ShadowItem>>,
        Option<Option<String>>,
    ),
    (Option<String>, String),
>;

/// A batch's jobs field: a side, or `heaviest` to leave it to the heaviest side.
fn parse_jobs(spec: &str) -> Option<String> {
    (!spec.eq_ignore_ascii_case("heaviest")).then(|| spec.to_owned())
}

/// A batch's shadow field: `TARGET:PERCENT`, or `none` to remove the tenant's shadow.
fn parse_shadow(spec: &str) -> Result<Option<ShadowItem>, String> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    ShadowItem::parse(spec).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    tenant: String,
    target: Option<String>,
    split: Option<String>,
    weights: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    seal: bool,
    shadow: Option<String>,
    jobs: Option<String>,
}

fn parse_json_row(text: &str) -> ParsedRow {
    let row: JsonRow = serde_json::from_str(text).map_err(|e| {
        let tenant = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("tenant")?.as_str().map(str::to_owned));
        (tenant, format!("not a batch row: {e}"))
    })?;
    let tenant = row.tenant;
    let placing = match (row.target, row.split, row.weights) {
        (Some(t), None, None) => Placing::Pinned(t),
        (None, Some(s), None) => {
            Placing::parse_split(&s).map_err(|e| (Some(tenant.clone()), format!("split: {e}")))?
        }
        (None, None, Some(w)) => Placing::Split(w),
        (None, None, None) => {
            return Err((
                Some(tenant),
                "no placement: give \"target\", \"split\" or \"weights\"".into(),
            ));
        }
        _ => {
            return Err((
                Some(tenant),
                "give one of \"target\", \"split\" and \"weights\"".into(),
            ));
        }
    };
    let shadow = match row.shadow.as_deref().map(parse_shadow).transpose() {
        Ok(shadow) => shadow,
        Err(e) => return Err((Some(tenant), e)),
    };
    let jobs = row.jobs.as_deref().map(parse_jobs);
    Ok((tenant, placing, row.seal, shadow, jobs))
}

/// Where each field sits in a CSV row.
struct Columns {
    tenant: usize,
    target: Option<usize>,
    split: Option<usize>,
    seal: Option<usize>,
    shadow: Option<usize>,
    jobs: Option<usize>,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            tenant: 0,
            target: Some(1),
            split: None,
            seal: Some(2),
            shadow: None,
            jobs: None,
        }
    }
}

impl Columns {
    fn from_header(fields: &[String]) -> Result<Columns, String> {
        let mut c = Columns {
            tenant: 0,
            target: None,
            split: None,
            seal: None,
            shadow: None,
            jobs: None,
        };
        for (i, f) in fields.iter().enumerate() {
            match f.to_ascii_lowercase().as_str() {
                "tenant" => c.tenant = i,
                "target" => c.target = Some(i),
                "split" | "weights" => c.split = Some(i),
                "seal" | "sealed" => c.seal = Some(i),
                "shadow" => c.shadow = Some(i),
                "jobs" => c.jobs = Some(i),
                other => {
                    return Err(format!(
                        "unknown column {other:?} in the header (columns: tenant, target, split, seal, shadow, jobs)"
                    ));
                }
            }
        }
        if c.target.is_none() && c.split.is_none() {
            return Err("the header has neither a target nor a split column".into());
        }
        Ok(c)
    }

    fn row(&self, fields: &[String]) -> ParsedRow {
        let field = |i: Option<usize>| {
            i.and_then(|i| fields.get(i))
                .map(|s| s.as_str())
                .filter(|s| !s.is_empty())
        };
        let Some(tenant) = field(Some(self.tenant)) else {
            return Err((None, "no tenant in the first column".into()));
        };
        let tenant = tenant.to_owned();
        let known = [
            Some(self.tenant),
            self.target,
            self.split,
            self.seal,
            self.shadow,
            self.jobs,
        ];
        if let Some(extra) = (0..fields.len()).find(|i| !known.contains(&Some(*i))) {
            return Err((
                Some(tenant),
                format!(
                    "unexpected field {:?} (a row is tenant,placement[,seal]; quote a split that contains commas)",
                    fields[extra]
                ),
            ));
        }
        let err = |reason: String| (Some(tenant.clone()), reason);
        let placing = match (field(self.target), field(self.split)) {
            (Some(_), Some(_)) => return Err(err("both a target and a split".into())),
            (Some(t), None) if !t.contains('=') => Placing::Pinned(t.to_owned()),
            (Some(s), None) | (None, Some(s)) => Placing::parse_split(&s.replace(';', ","))
                .map_err(|e| err(format!("split: {e}")))?,
            (None, None) => return Err(err("no target or split".into())),
        };
        let seal = match field(self.seal).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "no" | "0") => false,
            Some("seal" | "sealed" | "true" | "yes" | "1") => true,
            Some(other) => {
                return Err(err(format!(
                    "seal {other:?} is not one of seal, true, yes, 1, false, no, 0"
                )));
            }
        };
        let shadow = field(self.shadow)
            .map(parse_shadow)
            .transpose()
            .map_err(err)?;
        let jobs = field(self.jobs).map(parse_jobs);
        Ok((tenant, placing, seal, shadow, jobs))
    }
}

/// Splits one CSV line; a field may be double-quoted (`""` inside is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut field).trim().to_owned()),
            (c, _) => field.push(c),
        }
    }
    fields.push(field.trim().to_owned());
    fields
}

/// What the batch would do to one tenant.
#[derive(Debug)]
pub struct Change {
    pub write: FlagWrite,
    pub from: Option<FlagItem>,
    pub to: FlagItem,
    /// The tenant is sealed and this moves it (allowed only with `--force`).
    pub moves_sealed: bool,
}

impl Change {
    /// Whether this change places the tenant elsewhere (not only seals it or sets a shadow).
    pub fn moves(&self) -> bool {
        self.from
            .as_ref()
            .is_none_or(|f| f.target != self.to.target || f.weights != self.to.weights)
    }
}

/// The whole plan: changes to write, rows already as asked, and rows refused.
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: Vec<String>,
    pub rejected: Vec<BadRow>,
    /// Sealed tenants the batch would move, refused because `--force` was not given.
    pub refused_sealed: Vec<String>,
    /// Each tenant's shadow results, (matched, compared), when a router was asked.
    pub match_rates: Option<HashMap<String, (u64, u64)>>,
}

/// Checks every row against the store as it is now; writes nothing.
pub async fn plan(
    store: &Store,
    rows: Vec<Row>,
    mut rejected: Vec<BadRow>,
    targets: Option<&Targets>,
    by: &str,
    reason: &str,
    force: bool,
) -> Result<Plan, StoreError> {
    let tenants: Vec<String> = rows.iter().map(|r| r.tenant.clone()).collect();
    let mut currents = store.currents(&tenants).await?;
    let now = flag_store::model::now_secs();
    let mut plan = Plan::default();
    for row in rows {
        let current = currents.remove(&row.tenant).unwrap_or_default();
        let write = FlagWrite {
            evacuation: None,
            ramp: None,
            hold: Default::default(),
            jobs: row.jobs,
            tenant: row.tenant.clone(),
            placing: Some(row.placing),
            seal: row.seal.then_some(true),
            shadow: row.shadow,
            by: by.to_owned(),
            reason: reason.to_owned(),
            expect_version: Some(current.version),
            force,
        };
        match write.apply(&current, targets, now) {
            Ok(to) => {
                // Already where the row asks: a re-run writes nothing.
                let same_extras = (current.item.as_ref())
                    .is_some_and(|i| i.shadow == to.shadow && i.jobs == to.jobs);
                if !current.moves_to(&to) && current.sealed == to.sealed && same_extras {
                    plan.unchanged.push(row.tenant);
                    continue;
                }
                let moves_sealed = current.sealed && current.moves_to(&to);
                plan.changes.push(Change {
                    write,
                    from: current.item,
                    to,
                    moves_sealed,
                });
            }
            Err(e) => {
                if matches!(e, StoreError::Sealed { .. }) {
                    plan.refused_sealed.push(row.tenant.clone());
                }
                rejected.push(BadRow {
                    line: row.line,
                    reason: reason_of(&row.tenant, &e),
                    tenant: Some(row.tenant),
                });
            }
        }
    }
    rejected.sort_by_key(|b| b.line);
    plan.rejected = rejected;
    Ok(plan)
}

/// An error's message without the `tenant "x"` prefix the row already shows.
pub fn reason_of(tenant: &str, e: &StoreError) -> String {
    match e {
        StoreError::Item { source, .. } => source.to_string(),
        other => {
            let message = flag_store::error::Chain(other).to_string();
            match message.strip_prefix(&format!("tenant {tenant:?} ")) {
                Some(rest) => rest.to_owned(),
                None => message,
            }
        }
    }
}

impl Plan {
    /// The plan as an operator reads it before saying yes.
    pub fn render(&self, describe: impl Fn(&FlagItem) -> String) -> String {
        let mut out = String::new();
        let place = |i: Option<&FlagItem>| i.map_or("(no flag)".to_owned(), &describe);
        if !self.changes.is_empty() {
            let _ = writeln!(out, "changes ({}):", self.changes.len());
            let width = self
                .changes
                .iter()
                .map(|c| c.write.tenant.len())
                .max()
                .unwrap_or(0);
            for c in &self.changes {
                let note = if c.moves_sealed {
                    "  [sealed, forced]"
                } else {
                    ""
                };
                let rate = match (&self.match_rates, c.moves()) {
                    (Some(rates), true) => match rates.get(&c.write.tenant) {
                        Some(&(matched, compared)) if compared > 0 => format!(
                            "  [shadow matched {:.1}% of {compared}]",
                            100.0 * matched as f64 / compared as f64
                        ),
                        _ => "  [no shadow results]".to_owned(),
                    },
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {:<width$}  {} -> {}{note}{rate}",
                    c.write.tenant,
                    place(c.from.as_ref()),
                    describe(&c.to),
                );
            }
        }
        let mut moves: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut after: BTreeMap<String, usize> = BTreeMap::new();
        for c in &self.changes {
            let from = c.from.as_ref().map_or("(no flag)".to_owned(), placement);
            *moves.entry((from, placement(&c.to))).or_default() += 1;
            *after.entry(placement(&c.to)).or_default() += 1;
        }
        if !moves.is_empty() {
            let _ = writeln!(out, "moves by target:");
            for ((from, to), n) in &moves {
                let _ = writeln!(out, "  {from} -> {to}: {n}");
            }
            let _ = writeln!(
                out,
                "tenants by target after the batch (changed tenants only): {}",
                after
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let sealed: Vec<&str> = self
            .changes
            .iter()
            .filter(|c| c.moves_sealed)
            .map(|c| c.write.tenant.as_str())
            .collect();
        if !sealed.is_empty() {
            let _ = writeln!(
                out,
                "sealed tenants this batch moves (--force): {}",
                sealed.join(", ")
            );
        }
        if !self.refused_sealed.is_empty() {
            let _ = writeln!(
                out,
                "sealed tenants it would move, refused without --force: {}",
                self.refused_sealed.join(", ")
            );
        }
        if !self.unchanged.is_empty() {
            let _ = writeln!(
                out,
                "already as the batch says (skipped): {}",
                self.unchanged.len()
            );
        }
        if !self.rejected.is_empty() {
            let _ = writeln!(out, "rejected rows ({}):", self.rejected.len());
            for r in &self.rejected {
                let _ = writeln!(out, "  {r}");
            }
        }
        let _ = writeln!(
            out,
            "plan: {} to change, {} unchanged, {} rejected",
            self.changes.len(),
            self.unchanged.len(),
            self.rejected.len()
        );
        out
    }
}

/// A pinned target's name, or `split` for a split tenant (for counting).
fn placement(item: &FlagItem) -> String {
    match &item.target {
        Some(t) => t.clone(),
        None => "split".into(),
    }
}

/// Writes the plan's changes; returns each tenant's result in plan order.
pub async fn apply(store: &Store, plan: &Plan, targets: Option<&Targets>) -> Vec<WriteResult> {
    let writes: Vec<FlagWrite> = plan.changes.iter().map(|c| c.write.clone()).collect();
    super::progress::write_all(store, &writes, targets).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u32)]) -> Placing {
        Placing::Split(pairs.iter().map(|(t, w)| (t.to_string(), *w)).collect())
    }

    #[test]
    fn csv_rows_with_targets_splits_and_seals() {
        let text = "# batch 7\n\
                    acme,new\n\
                    globex,\"legacy=90,new=10\"\n\
                    initech,legacy=50;new=50,seal\n\
                    \n\
                    hooli, new , yes\n";
        let (rows, bad) = parse(text);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            rows.iter()
                .map(|r| (r.tenant.as_str(), r.placing.clone(), r.seal, r.line))
                .collect::<Vec<_>>(),
            vec![
                ("acme", Placing::Pinned("new".into()), false, 2),
                ("globex", split(&[("legacy", 90), ("new", 10)]), false, 3),
                ("initech", split(&[("legacy", 50), ("new", 50)]), true, 4),
                ("hooli", Placing::Pinned("new".into()), true, 6),
            ]
        );
    }

    #[test]
    fn a_batch_names_a_split_tenants_job_side_or_leaves_it_to_the_heaviest() {
        let (rows, bad) = parse(
            "tenant,split,jobs\nacme,legacy=90;new=10,new\nglobex,legacy=50;new=50,heaviest\ninitech,legacy=50;new=50,\n",
        );
        assert!(bad.is_empty(), "{bad:?}");
        let jobs: Vec<_> = rows.iter().map(|r| r.jobs.clone()).collect();
        assert_eq!(jobs, [Some(Some("new".into())), Some(None), None]);
        let (rows, bad) =
            parse("{\"tenant\":\"acme\",\"split\":\"legacy=90,new=10\",\"jobs\":\"new\"}\n");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows[0].jobs, Some(Some("new".into())));
    }

    #[test]
    fn a_csv_header_names_the_columns_in_any_order() {
        let (rows, bad) = parse("seal,tenant,target\nyes,acme,new\n,globex,legacy\n");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows[0].tenant, "acme");
        assert!(rows[0].seal);
        assert_eq!(rows[1].placing, Placing::Pinned("legacy".into()));
        let (_, bad) = parse("tenant,colour\nacme,red\n");
        assert!(
            bad[0].reason.contains("unknown column \"colour\""),
            "{bad:?}"
        );
    }

    #[test]
    fn rows_set_or_remove_a_shadow_and_a_bad_one_is_named() {
        let (rows, bad) = parse(
            "tenant,target,shadow\nacme,legacy,new:10\nglobex,legacy,none\nhooli,legacy,\nx,legacy,new:ten\n",
        );
        assert_eq!(rows[0].shadow, Some(ShadowItem::parse("new:10").ok()));
        assert_eq!(rows[1].shadow, Some(None));
        assert_eq!(rows[2].shadow, None, "an empty field keeps the shadow");
        assert!(bad[0].reason.contains("\"ten\""), "{bad:?}");
        let (rows, bad) = parse(r#"{"tenant":"acme","target":"legacy","shadow":"new:25"}"#);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rows[0].shadow, Some(ShadowItem::parse("new:25").ok()));
    }

    #[test]
    fn json_lines_rows() {
        let text = r#"{"tenant":"acme","target":"new","seal":true}
{"tenant":"globex","weights":{"legacy":90,"new":10}}
{"tenant":"initech","split":"legacy=50,new=50"}
{"tenant":"hooli","target":"new","split":"new=100"}
{"tenant":"umbrella"}
{"tenant":"x", "colour":"red"}
not json
"#;
        let (rows, bad) = parse(text);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].seal);
        assert_eq!(rows[1].placing, split(&[("legacy", 90), ("new", 10)]));
        let reasons: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert!(
            reasons[0].starts_with("line 4: tenant \"hooli\": give one of"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("no placement"), "{reasons:?}");
        assert!(reasons[2].contains("unknown field `colour`"), "{reasons:?}");
        assert!(
            reasons[3].starts_with("line 7: not a batch row"),
            "{reasons:?}"
        );
    }

    #[test]
    fn bad_rows_are_rejected_alone_and_named() {
        let text = "acme,new\n\
                    bad tenant!,new\n\
                    globex,legacy=90;new=x\n\
                    initech,new,maybe\n\
                    hooli,new,seal,extra\n\
                    ,new\n\
                    acme2,new\n";
        let (rows, bad) = parse(text);
        assert_eq!(
            rows.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>(),
            ["acme", "acme2"]
        );
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(bad[0].reason.contains("invalid tenant id"), "{:?}", bad[0]);
        assert!(bad[1].reason.contains("not a whole number"), "{:?}", bad[1]);
        assert!(bad[2].reason.contains("seal \"maybe\""), "{:?}", bad[2]);
        assert!(
            bad[3].reason.contains("unexpected field \"extra\""),
            "{:?}",
            bad[3]
        );
        assert!(bad[4].reason.contains("no tenant"), "{:?}", bad[4]);
    }

    #[test]
    fn a_tenant_named_twice_is_rejected_on_both_lines() {
        let (rows, bad) = parse("acme,new\nglobex,new\nacme,legacy\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(bad.len(), 2);
        assert!(
            bad.iter().all(|b| b.reason.contains("lines 1, 3")),
            "{bad:?}"
        );
    }
}
