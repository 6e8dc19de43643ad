//! Imports between the top-level modules of `src/` run one way (docs/architecture.md):
//! a module may name a module below it, never one that names it back. This test
//! reads every `crate::<module>` path in `src/` (comments and tests excluded: what
//! follows a file's first `#[cfg(test)]`) and fails on a cycle, naming the modules, the
//! files and the lines that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One `crate::<to>` path found in `file` (relative to `src/`) at `line`.
#[derive(Clone, Debug)]
struct Use {
    file: String,
    line: usize,
    text: String,
}

type Graph = BTreeMap<String, BTreeMap<String, Vec<Use>>>;

/// The top-level module a file belongs to: `stages/embed.rs` → `stages`,
/// `fsutil.rs` → `fsutil`; `lib.rs` and `main.rs` only declare modules.
fn top_module(rel: &str) -> Option<String> {
    let first = rel.split('/').next()?;
    let m = first.strip_suffix(".rs").unwrap_or(first);
    (m != "lib" && m != "main").then(|| m.to_string())
}

/// The modules named by `crate::…` paths in `code`, grouped imports
/// (`crate::{a, b::c}`, across lines too) included, each with the byte offset
/// where its path starts.
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let at = from + i;
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for part in inner.split(',') {
                out.extend(ident(part.trim()).map(|m| (at, m)));
            }
        } else {
            out.extend(ident(after).map(|m| (at, m)));
        }
        from = at + "crate::".len();
    }
    out
}

fn ident(s: &str) -> Option<String> {
    let id: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty() && !id.starts_with(|c: char| c.is_ascii_digit())).then_some(id)
}

/// The graph of `files` (path relative to `src/`, text): module → module → uses.
fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| top_module(p)).collect();
    let mut g = Graph::new();
    for (path, text) in files {
        let Some(from) = top_module(path) else {
            continue;
        };
        let entry = g.entry(from.clone()).or_default();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let lines: Vec<&str> = code.lines().collect();
        for (at, to) in named_modules(code) {
            if to != from && modules.contains(&to) {
                let line = code[..at].matches('\n').count();
                if lines[line].trim_start().starts_with("//") {
                    continue; // a doc link is not an import
                }
                entry.entry(to).or_default().push(Use {
                    file: path.clone(),
                    line: line + 1,
                    text: lines[line].trim().to_string(),
                });
            }
        }
    }
    g
}

/// The modules `from` reaches by one or more steps.
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(v) = todo.pop() {
        for w in g[&v].keys() {
            if seen.insert(w.clone()) {
                todo.push(w.clone());
            }
        }
    }
    seen
}

/// Every cycle: each set of modules that reach one another, with the shortest
/// loop through its first module spelled out by the uses that make each step.
fn cycles(g: &Graph) -> Vec<String> {
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(g, m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in g.keys() {
        if done.contains(m) || !reaches[m].contains(m) {
            continue;
        }
        let members: BTreeSet<String> = reaches[m]
            .iter()
            .filter(|o| reaches[o].contains(m))
            .cloned()
            .collect();
        done.extend(members.iter().cloned());
        let path = shortest_loop(g, m);
        let mut msg = format!(
            "modules {} import each other in a circle: {}",
            members
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            path.join(" → ")
        );
        for pair in path.windows(2) {
            let uses = &g[&pair[0]][&pair[1]];
            msg.push_str(&format!("\n  {} → {}:", pair[0], pair[1]));
            for u in uses.iter().take(3) {
                msg.push_str(&format!("\n    src/{}:{}: {}", u.file, u.line, u.text));
            }
            if uses.len() > 3 {
                msg.push_str(&format!("\n    … and {} more", uses.len() - 3));
            }
        }
        out.push(msg);
    }
    out
}

/// The shortest path `start` → … → `start` (breadth first), as module names.
fn shortest_loop(g: &Graph, start: &str) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(v) = queue.pop_front() {
        for w in g[&v].keys() {
            if w == start {
                let mut path = vec![v.clone()];
                while let Some(p) = prev.get(path.last().unwrap()) {
                    path.push(p.clone());
                }
                path.reverse();
                path.push(start.to_string());
                return path;
            }
            if w != start && !prev.contains_key(w) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    vec![start.to_string()]
}

fn read_src(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_src(&p, root, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn top_level_modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&src, &src, &mut files);
    let g = graph(&files);
    assert!(
        g.len() > 10,
        "found only {} top-level modules in {}",
        g.len(),
        src.display()
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "{}", found.join("\n\n"));
}

#[test]
fn a_cycle_added_by_hand_is_found_and_named() {
    let files = vec![
        ("a.rs".to_string(), "use crate::b::B;\n".to_string()),
        ("b/mod.rs".to_string(), "pub mod x;\n".to_string()),
        (
            "b/x.rs".to_string(),
            "//! x\nuse crate::{c, fsutil};\n".to_string(),
        ),
        (
            "c.rs".to_string(),
            "fn f() { crate::a::g() }\n#[cfg(test)]\nuse crate::b;\n".to_string(),
        ),
        ("fsutil.rs".to_string(), "// a leaf\n".to_string()),
        (
            "d.rs".to_string(),
            "use crate::{\n    fsutil::x,\n    a::y,\n};\n".to_string(),
        ),
        ("lib.rs".to_string(), "pub mod a;\n".to_string()),
    ];
    let found = cycles(&graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert!(
        m.starts_with("modules a, b, c import each other in a circle: a → b → c → a"),
        "{m}"
    );
    assert!(m.contains("src/a.rs:1: use crate::b::B;"), "{m}");
    assert!(m.contains("src/b/x.rs:2: use crate::{c, fsutil};"), "{m}");
    assert!(m.contains("src/c.rs:1: fn f() { crate::a::g() }"), "{m}");
    // A grouped import across lines names each module (d → a is read, d is in no circle).
    let g = graph(&files);
    assert_eq!(g["d"].keys().collect::<Vec<_>>(), ["a", "fsutil"]);
    assert_eq!(g["d"]["a"][0].line, 1);
    // A use inside the tests of a file is not an edge: c → b alone makes no second circle.
    let acyclic = vec![
        ("a.rs".to_string(), "use crate::b::B;\n".to_string()),
        (
            "b.rs".to_string(),
            "#[cfg(test)]\nuse crate::a;\n".to_string(),
        ),
    ];
    assert!(cycles(&graph(&acyclic)).is_empty());
}
