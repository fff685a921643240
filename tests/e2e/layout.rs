//! The workspace's shape: no module of `router`, `http1` or `flag-store` reaches back to a
//! module that reaches it (an import circle makes a change anywhere in it a change to all).

use std::collections::{BTreeMap, BTreeSet};

/// For each module of a crate's `src/`, the other modules its non-test code names as
/// `crate::NAME`.
fn imports(crate_dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut uses = BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
        graph.insert(module, uses);
    }
    graph
}

/// A circle through `from`, if there is one: the modules along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
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

#[test]
fn no_module_imports_a_module_that_imports_it() {
    for krate in ["router", "http1", "flag-store"] {
        let graph = imports(krate);
        assert!(graph.len() > 3, "{krate}: {graph:?}");
        // `lib.rs` declares every module; re-exports from it are not imports.
        for module in graph.keys().filter(|m| *m != "lib" && *m != "main") {
            if let Some(found) = circle(&graph, module) {
                panic!("{krate}: an import circle: {}", found.join(" -> "));
            }
        }
    }
}
