//! The layering rules, checked on the source: `use crate::…` lines (and `crate::…` paths)
//! say which top-level module each module imports. The rules (see `src/lib.rs`):
//! - `http` and `ops` are leaves: they import nothing of ours;
//! - each layer imports only the layers below it (config → origin → stream → request → edge,
//!   with `proxy` at the top and `tools` apart); nothing in the core imports `tools`;
//! - there is no import cycle between top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module may import.
fn allowed(module: &str) -> &'static [&'static str] {
    match module {
        "http" | "ops" => &[],
        "config" => &["http"],
        "origin" => &["config", "http", "ops"],
        "stream" => &["config", "http", "ops", "origin"],
        "request" => &["config", "http", "ops", "origin", "stream"],
        "edge" => &["config", "http", "ops", "origin", "request"],
        "proxy" => &[
            "config", "edge", "http", "ops", "origin", "request", "stream",
        ],
        "tools" => &["config", "http", "ops", "origin", "proxy", "stream"],
        _ => &[],
    }
}

/// The top-level module a source file belongs to (`src/stream/hub.rs` → `stream`).
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every top-level module a file names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (index, _) in text.match_indices("crate::") {
        let before = text[..index].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `sse_edge_crate::` or similar, not ours
        }
        let rest = &text[index + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the modules it imports, over the whole crate.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&file, &src) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn every_import_follows_the_layers() {
    let graph = graph();
    assert!(graph.len() >= 8, "the source tree was not found: {graph:?}");
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        for import in imports {
            if !allowed(module).contains(&import.as_str()) {
                wrong.push(format!("{module} → {import}"));
            }
        }
    }
    assert!(wrong.is_empty(), "forbidden layer arrows: {wrong:?}");
}

#[test]
fn there_is_no_import_cycle() {
    let graph = graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(true) => return None,
            Some(false) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(node, false);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node, true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(node, &graph, &mut state, &mut path) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_checker_sees_a_forbidden_arrow() {
    // The checker itself must be able to fail: a leaf naming a higher layer is caught.
    let found = imports("use crate::stream::Streams;\nlet x = crate::ops::metrics::X;");
    assert!(found.contains("stream") && found.contains("ops"));
    assert!(!allowed("http").contains(&"stream"));
    assert!(imports("use my_crate::stream;").is_empty());
}
