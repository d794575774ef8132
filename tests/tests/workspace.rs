//! The workspace keeps its shape: dependencies point the way ARCHITECTURE.md says, the
//! crates that must stay small (the GGUF reader, the engine, the C library) do not pull in
//! the HTTP stack or the CLI parser, and no test reads outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// For each workspace crate, the workspace crates it may depend on (normal dependencies;
/// dev-dependencies are free); a trailing `*` matches a family of names, `"*"` anything.
/// A crate missing here fails the test: add it, and to the code map of ARCHITECTURE.md.
const ALLOWED: &[(&str, &[&str])] = &[
    ("kiln-ir", &[]),
    ("kiln-gguf", &["kiln-ir"]),
    ("kiln-tokenizer", &["kiln-gguf"]),
    ("kiln-kv", &["kiln-ir"]),
    (
        "kiln-engine",
        &["kiln-ir", "kiln-gguf", "kiln-tokenizer", "kiln-kv"],
    ),
    // Constrained decoding: grammars over a tokenizer's vocabulary (llguidance).
    ("kiln-structured", &["kiln-tokenizer"]),
    (
        "kiln-serve",
        &[
            "kiln-ir",
            "kiln-engine",
            "kiln-kv",
            "kiln-tokenizer",
            "kiln-structured",
        ],
    ),
    (
        "kiln-tools",
        &["kiln-ir", "kiln-engine", "kiln-gguf", "kiln-tokenizer"],
    ),
    (
        "kiln-cli",
        &[
            "kiln-ir",
            "kiln-engine",
            "kiln-backends",
            "kiln-tools",
            "kiln-serve",
            "kiln-structured",
        ],
    ),
    ("kiln-capi", &["kiln-ir", "kiln-engine", "kiln-backends"]),
    // Kernel crates: sources, the glue that embeds them and their lowering of a plan; the
    // host logic both need (step buffer, weight bytes) is kiln-gpu-host's.
    ("kiln-kernels-wgsl", &["kiln-ir", "kiln-gpu-host"]),
    ("kiln-kernels-cuda", &["kiln-ir", "kiln-gpu-host"]),
    // The host logic GPU backends share (kernel cache, output reads, timers): the IR only.
    ("kiln-gpu-host", &["kiln-ir"]),
    // A backend (any `kiln-backend-*`): the IR, the shared GPU host logic and kernel
    // crates, never the engine.
    (
        "kiln-backend-*",
        &["kiln-ir", "kiln-gpu-host", "kiln-kernels-*"],
    ),
    // The registry: the IR and every backend.
    ("kiln-backends", &["kiln-ir", "kiln-backend-*"]),
    ("kiln-testkit", &["kiln-backends"]),
    ("kiln-tests", &["*"]),
    ("kiln-bench", &["*"]),
];

/// Crates whose whole dependency tree must not contain these packages.
const FORBIDDEN_BELOW: &[(&str, &[&str])] = &[
    (
        "kiln-gguf",
        &["tokio", "axum", "clap", "wgpu", "ash", "cudarc"],
    ),
    ("kiln-tokenizer", &["tokio", "axum", "clap"]),
    ("kiln-structured", &["tokio", "axum", "clap"]),
    (
        "kiln-engine",
        &["tokio", "axum", "clap", "wgpu", "ash", "cudarc"],
    ),
    ("kiln-capi", &["clap", "tokio", "axum"]),
];

fn root() -> PathBuf {
    kiln_tests::workspace_root()
}

/// `cargo metadata` for this machine's platform, from the lock file (no network).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package id → (name, normal dependencies' ids).
fn graph(meta: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let id = node["id"].as_str().unwrap();
            let normal = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            (id.to_string(), (names[id].to_string(), normal))
        })
        .collect()
}

#[test]
fn dependencies_point_the_way_architecture_md_says() {
    let meta = metadata();
    let graph = graph(&meta);
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| graph[m.as_str().unwrap()].0.clone())
        .collect();
    let matches = |pattern: &str, name: &str| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    };
    let mut wrong = Vec::new();
    for (name, deps) in graph.values().filter(|(n, _)| members.contains(n)) {
        // The exact entry wins over a family's.
        let entry = ALLOWED
            .iter()
            .find(|(p, _)| p == name)
            .or_else(|| ALLOWED.iter().find(|(p, _)| matches(p, name)));
        let Some((_, ok)) = entry else {
            wrong.push(format!(
                "{name} is not in ALLOWED (tests/tests/workspace.rs)"
            ));
            continue;
        };
        for dep in deps.iter().map(|d| &graph[d].0) {
            if members.contains(dep) && !ok.iter().any(|p| matches(p, dep)) {
                wrong.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "edges ARCHITECTURE.md forbids:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn small_crates_do_not_pull_in_big_ones() {
    let meta = metadata();
    let graph = graph(&meta);
    let by_name: BTreeMap<&str, &str> = graph
        .iter()
        .map(|(id, (name, _))| (name.as_str(), id.as_str()))
        .collect();
    for (krate, forbidden) in FORBIDDEN_BELOW {
        let mut seen = BTreeSet::new();
        let mut todo = vec![by_name[krate].to_string()];
        while let Some(id) = todo.pop() {
            if seen.insert(id.clone()) {
                todo.extend(graph[&id].1.iter().cloned());
            }
        }
        let names: BTreeSet<&str> = seen.iter().map(|id| graph[id].0.as_str()).collect();
        for f in *forbidden {
            assert!(
                !names.contains(f),
                "{krate} depends (through its tree) on {f}"
            );
        }
    }
}

/// Every `.rs` file of the workspace, outside target/.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "models" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Tests read only what the repository holds (tests/data, the fetched models/): no
/// shared folder beside the checkout, no path that climbs out of the workspace.
#[test]
fn no_source_reads_outside_the_workspace() {
    let mut files = Vec::new();
    sources(&root(), &mut files);
    let shared = ["..", "/shared"].concat();
    let climb = ["\"/..", "/..\""].concat();
    let twice = ["/../", "../"].concat();
    let mut bad = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(&shared) || line.contains(&climb) || line.contains(&twice) {
                bad.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "reads outside the workspace:\n{}",
        bad.join("\n")
    );
}

/// The GGUF reader's fuzz target builds against kiln-gguf alone (its own workspace, so
/// `cargo metadata` of this one does not see it): the only path dependency of
/// `fuzz/Cargo.toml` is `../gguf`.
#[test]
fn the_gguf_fuzz_target_depends_on_kiln_gguf_alone() {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    let paths: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.split_once("path = \"")?.1.split_once('"').map(|(p, _)| p))
        .filter(|p| !p.starts_with("fuzz_targets/"))
        .collect();
    assert_eq!(paths, ["../gguf"], "fuzz/Cargo.toml path dependencies");
}
