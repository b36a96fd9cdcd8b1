//! The core's modules depend on each other in one direction only: no cycle
//! between top-level modules of src/ (a module's files count as one, tests
//! and comments aside). A cycle is how a concern leaks into the wrong place
//! (the event queue knowing tokens, the signBlob client knowing the
//! credentials module that builds it), so this test names it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level module -> the top-level modules its non-test code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for sub in fs::read_dir(&path).unwrap() {
                files.push(sub.unwrap().path());
            }
        } else {
            files.push(path);
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(list) = rest.strip_prefix('{') {
                    list.split('}').next().unwrap().split(',').collect()
                } else {
                    vec![rest]
                };
                for name in names {
                    let ident: String = name
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // `crate::Error` and friends are re-exports of `error` and
                    // `request`; a lower-case name is a module.
                    let target = match ident.as_str() {
                        "Error" | "ErrorKind" | "Result" => "error".to_owned(),
                        "UrlRequest" | "UrlStyle" | "Version" => "request".to_owned(),
                        "UrlSigner" => "signer".to_owned(),
                        s if s.starts_with(|c: char| c.is_ascii_lowercase()) => s.to_owned(),
                        _ => continue,
                    };
                    if target != module {
                        deps.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, if any, as the list of modules on it.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == from) {
        let mut cycle = path[at..].to_vec();
        cycle.push(from.to_owned());
        return Some(cycle);
    }
    path.push(from.to_owned());
    for dep in graph.get(from).into_iter().flatten() {
        if let Some(cycle) = cycle_from(graph, dep, path) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

#[test]
fn the_core_has_no_module_cycle() {
    let graph = graph();
    // The parser sees the edges it must: these are known dependencies.
    assert!(graph["signer"].contains("cache"), "{graph:?}");
    assert!(graph["credentials"].contains("iam"), "{graph:?}");
    assert!(graph["token"].contains("events"), "{graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module, &mut Vec::new()) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), ["b".to_owned()].into());
    graph.insert("b".into(), ["a".to_owned()].into());
    assert_eq!(
        cycle_from(&graph, "a", &mut Vec::new()),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
