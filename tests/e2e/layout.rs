//! The workspace's shape. In `router`, each folder is one layer: no module reaches back to a
//! module that reaches it, no folder to a folder that reaches it, and `policy/` (steps 1 to
//! 3 of the hot path) stays pure: nothing of the config, proxy or server, no I/O, no clock, no
//! async. `http1` and `flag-store` keep their modules free of circles too. Every check is
//! also run on a planted tree, so each is seen to fail when it should.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A crate's sources: module path (`proxy::headers`; the crate root is `""`) to its text.
type Sources = BTreeMap<String, String>;

/// Module path to the modules its non-test code names (`crate::a::b`, `super::x`).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources(crate_dir: &str) -> Sources {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut found = Sources::new();
    walk(&src, &src, &mut found);
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Sources) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // The binary (main.rs) and the library (lib.rs) are both roots; only lib.rs declares.
        if path.file_name().is_some_and(|n| n == "main.rs") {
            continue;
        }
        found.insert(parts.join("::"), text);
    }
}

/// A module's code without its tests and comments.
fn code(text: &str) -> impl Iterator<Item = &str> {
    let code = text.split("#[cfg(test)]").next().unwrap();
    code.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// The longest known module that `segments` (a path after `crate::`, or resolved from
/// `super::`) starts with.
fn resolve(known: &Sources, segments: &[String]) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// The lower-case path segments that follow position `at` in `line` (`a::b::` of
/// `a::b::Thing` or `a::b::{X, Y}`).
fn segments_after(line: &str, at: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = &line[at..];
    loop {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        out.push(name);
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    out
}

fn imports(known: &Sources) -> Graph {
    let mut graph = Graph::new();
    for (module, text) in known {
        let mut uses = BTreeSet::new();
        let here: Vec<String> = module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for line in code(text) {
            for (i, _) in line.match_indices("crate::") {
                // A bare `crate::`, not the end of a longer name.
                if line[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                if let Some(m) = resolve(known, &segments_after(line, i + 7)) {
                    uses.insert(m);
                }
            }
            for (i, _) in line.match_indices("super::") {
                if line[..i].ends_with("super::") {
                    continue;
                }
                let mut at = i;
                let mut base = here.clone();
                while line[at..].starts_with("super::") {
                    base.pop();
                    at += 7;
                }
                let full = [base, segments_after(line, at)].concat();
                if let Some(m) = resolve(known, &full) {
                    uses.insert(m);
                }
            }
        }
        uses.remove(module);
        uses.remove("");
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The same graph with each module replaced by its top-level folder (or leaf module).
fn folders(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or("").to_owned();
    let mut out = Graph::new();
    for (from, tos) in graph {
        let entry = out.entry(top(from)).or_default();
        for to in tos {
            entry.insert(top(to));
        }
    }
    for (from, tos) in out.iter_mut() {
        tos.remove(from);
        tos.remove("");
    }
    out.remove("");
    out
}

/// A circle through `from`, if there is one: the nodes along it.
fn circle(graph: &Graph, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_owned(), vec![from.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

fn circles(graph: &Graph) -> Vec<String> {
    let mut found: Vec<String> = graph
        .keys()
        .filter_map(|m| circle(graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    found.dedup();
    found
}

/// What `policy/` must not name: the layers above it, I/O, the clock and async.
const NOT_IN_POLICY: [&str; 14] = [
    "crate::config",
    "crate::proxy",
    "crate::server",
    "crate::admin",
    "crate::body",
    "crate::upstream",
    "tokio",
    "hyper",
    "std::fs",
    "std::io",
    "TcpStream",
    "Instant",
    "SystemTime",
    "async ",
];

/// Every way a module under `policy` breaks its purity: (module, what it names).
fn impure(known: &Sources, graph: &Graph) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (module, text) in known.iter().filter(|(m, _)| m.starts_with("policy")) {
        for line in code(text) {
            for bad in NOT_IN_POLICY {
                if line.contains(bad) {
                    found.push((module.clone(), bad.to_owned()));
                }
            }
        }
        for to in &graph[module] {
            if !to.starts_with("policy") {
                found.push((module.clone(), format!("crate::{to}")));
            }
        }
    }
    found
}

#[test]
fn no_module_or_folder_imports_one_that_imports_it() {
    for krate in ["router", "http1", "flag-store"] {
        let known = sources(krate);
        assert!(known.len() > 3, "{krate}: {:?}", known.keys());
        let graph = imports(&known);
        let found = circles(&graph);
        assert!(found.is_empty(), "{krate}: import circles: {found:#?}");
        let found = circles(&folders(&graph));
        assert!(
            found.is_empty(),
            "{krate}: circles between folders: {found:#?}"
        );
    }
}

#[test]
fn the_pick_and_its_inputs_stay_pure() {
    let known = sources("router");
    assert!(known.contains_key("policy::pick"), "{:?}", known.keys());
    let graph = imports(&known);
    // It does see what it needs: its own modules.
    assert!(graph["policy::pick"].contains("policy::route"));
    let found = impure(&known, &graph);
    assert!(found.is_empty(), "policy/ names: {found:?}");
}

#[test]
fn each_folder_says_its_concern_and_the_map_names_it() {
    let known = sources("router");
    let lib = &known[""];
    let folders: BTreeSet<&str> = known
        .keys()
        .filter(|m| m.contains("::"))
        .map(|m| m.split("::").next().unwrap())
        .collect();
    assert!(folders.len() >= 7, "{folders:?}");
    for folder in folders {
        assert!(
            known[folder].starts_with("//!"),
            "{folder}/mod.rs does not open with a //! saying its concern"
        );
        assert!(
            lib.contains(&format!("[`{folder}`]")),
            "lib.rs does not name the folder {folder}"
        );
    }
}

#[test]
fn no_router_file_or_function_outgrows_a_reading() {
    for (module, text) in sources("router") {
        let production: Vec<&str> = text.split("#[cfg(test)]").next().unwrap().lines().collect();
        assert!(
            production.len() <= 1_000,
            "router {module}: {} production lines",
            production.len()
        );
        // rustfmt's layout: a `fn` opens at some indent and closes with `}` at the same.
        for (i, line) in production.iter().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let head = line.trim_start();
            let head = head.strip_prefix("pub ").unwrap_or(head);
            let head = ["pub(crate) ", "pub(super) "]
                .iter()
                .fold(head, |h, p| h.strip_prefix(p).unwrap_or(h));
            let head = head.strip_prefix("async ").unwrap_or(head);
            if !head.starts_with("fn ") || line.ends_with(';') {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            let len = production[i..]
                .iter()
                .position(|l| *l == close)
                .unwrap_or(0);
            assert!(len <= 200, "router {module}: `{head}` is {len} lines");
        }
    }
}

/// A tree with a planted circle between folders, and a planted `policy -> config` import.
fn planted() -> Sources {
    let file = |text: &str| text.to_owned();
    BTreeMap::from([
        (
            String::new(),
            file("//! map\npub mod a;\npub mod b;\npub mod policy;\n"),
        ),
        ("a".into(), file("//! a\nmod inner;\n")),
        (
            "a::inner".into(),
            file("use crate::b::Thing;\nuse super::super::policy::pick;\n"),
        ),
        ("b".into(), file("//! b\nuse crate::a::inner::Other;\n")),
        ("policy".into(), file("//! policy\npub mod pick;\n")),
        (
            "policy::pick".into(),
            file(
                "use super::route::Route;\nuse crate::config::Route as Old;\n#[cfg(test)]\nuse tokio;\n",
            ),
        ),
        ("policy::route".into(), file("use http::Method;\n")),
        (
            "config".into(),
            file("//! config\nuse crate::policy::Route;\n"),
        ),
    ])
}

#[test]
fn the_checks_fail_on_a_planted_circle_and_a_planted_policy_import() {
    let known = planted();
    let graph = imports(&known);
    assert_eq!(
        graph["a::inner"],
        BTreeSet::from(["b".to_owned(), "policy::pick".to_owned()])
    );
    assert_eq!(
        graph["policy::pick"],
        BTreeSet::from(["config".to_owned(), "policy::route".to_owned()])
    );
    assert_eq!(
        circles(&graph),
        ["a::inner -> b -> a::inner", "b -> a::inner -> b"]
    );
    let by_folder = folders(&graph);
    assert!(circles(&by_folder).contains(&"a -> b -> a".to_owned()));
    // policy -> config -> policy is a circle between folders too.
    assert!(circles(&by_folder).contains(&"config -> policy -> config".to_owned()));
    let found = impure(&known, &graph);
    assert_eq!(
        found,
        [
            ("policy::pick".to_owned(), "crate::config".to_owned()),
            ("policy::pick".to_owned(), "crate::config".to_owned()),
        ],
        "the test-only tokio is allowed; the config import is named (as text and as an edge)"
    );
}
