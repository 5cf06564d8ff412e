//! The module layers of `src/` (see `src/lib.rs`): every `crate::…` path a file uses must
//! point to its own top-level module or to one in a layer below it, so the import graph has no
//! cycle, the data plane (`proxy` and below) never reaches up into the program's wiring
//! (`server`), and modules that share a layer (peers) never import each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A layer of more than one module holds peers:
/// each may import the layers below, none another of its layer.
const LAYERS: &[&[&str]] = &[
    &["wire"],
    &["transport"],
    &["tls"],
    &["protocol"],
    &["commands"],
    &["stats"],
    &["upstream"],
    &["cluster"],
    &["rules"],
    &["acl"],
    &["config"],
    &["proxy"],
    // The two programs, on the layers below: `server` runs the proxy (and follows a
    // Sentinel's failovers), `migrate` is `rekey migrate`. Both find a Sentinel's primary
    // with `upstream::sentinel`; only `main.rs` runs either.
    &["server", "migrate"],
];

/// The files of `src/upstream/` by layer, lowest first, as `LAYERS` one level down: the
/// contract with sessions, dialing, the driver, the two pools, then `Upstream` in `mod.rs`. So
/// the driver cannot reach the pinned pool to give a connection back.
const UPSTREAM: &[&[&str]] = &[
    &["credentials"],
    &["url", "silence", "mailbox"],
    &["settings"],
    &["contract"],
    &["dial"],
    &["driver"],
    &["shared", "pinned"],
    &["conn"],
    &["sentinel"],
    &["mod"],
];

/// The layer of `layers` that `name` is in.
fn rank_in(layers: &[&[&str]], name: &str) -> usize {
    layers
        .iter()
        .position(|layer| layer.contains(&name))
        .unwrap_or_else(|| panic!("{name} is in no layer: add it to LAYERS or UPSTREAM"))
}

/// The layer a top-level module is in.
fn rank(module: &str) -> usize {
    rank_in(LAYERS, module)
}

/// Whether `from` may use `target`: itself, or something in a lower layer.
fn may_import_in(layers: &[&[&str]], from: &str, target: &str) -> bool {
    target == from || rank_in(layers, target) < rank_in(layers, from)
}

/// Whether code in `module` may use `crate::{target}`.
fn may_import(module: &str, target: &str) -> bool {
    may_import_in(LAYERS, module, target)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules named by `crate::…` paths in the code (comments left out).
fn imports(text: &str) -> Vec<String> {
    let mut names = names_after(text, "crate::");
    names.retain(|name| !name.is_empty());
    names
}

/// The names that follow `prefix` (`crate::`, `super::`) in the code, comments left out; an
/// empty one where a group or glob follows (`crate::{…}`).
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at + prefix.len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
            rest = tail;
        }
    }
    out
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for target in imports(&text) {
            if !may_import(&module, &target) {
                wrong.push(format!(
                    "{} ({module}) imports crate::{target}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports pointing up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    // The parser finds what the test relies on: paths inside `use` lists and expressions, and
    // not those in comments.
    let found =
        imports("use crate::proxy::Proxy;\nlet x = crate::server::reload(); // crate::admin\n");
    assert_eq!(found, ["proxy", "server"]);
    assert!(rank("upstream") < rank("proxy"));
}

#[test]
fn peers_may_not_import_each_other() {
    assert_eq!(rank("server"), rank("migrate"));
    assert!(!may_import("server", "migrate"));
    assert!(!may_import("migrate", "server"));
    assert!(may_import("migrate", "upstream") && may_import("server", "proxy"));
    assert!(!may_import("proxy", "server") && !may_import("proxy", "migrate"));
}

/// What `src/upstream/mod.rs` re-exports (`pub use file::{A, B};`): each name's file.
fn reexports(mod_rs: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in mod_rs.lines() {
        let Some((file, names)) = line
            .strip_prefix("pub use ")
            .and_then(|l| l.split_once("::"))
        else {
            continue;
        };
        for name in names.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !name.is_empty() {
                out.insert(name.to_string(), file.to_string());
            }
        }
    }
    out
}

/// The files of `src/upstream/` a file there uses, by `crate::upstream::…` or `super::…`: a
/// file by name, a name `mod.rs` re-exports as the file it comes from, any other name (or a
/// group, `super::{…}`) as `mod`. Unit tests (from `#[cfg(test)]` on) are left out: their
/// `super` is the file itself.
fn upstream_imports(text: &str, reexported: &HashMap<String, String>) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut names = names_after(code, "crate::upstream::");
    names.extend(names_after(code, "super::"));
    let file_of = |name: String| match UPSTREAM.iter().any(|l| l.contains(&name.as_str())) {
        true => name,
        false => reexported
            .get(&name)
            .cloned()
            .unwrap_or_else(|| "mod".into()),
    };
    names.into_iter().map(file_of).collect()
}

#[test]
fn upstream_files_import_only_files_below() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/upstream");
    let reexported = reexports(&std::fs::read_to_string(dir.join("mod.rs")).unwrap());
    let mut wrong = Vec::new();
    // A directory (`credentials/`) is one layer: each of its files counts as it.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        match path.is_dir() {
            true => {
                let mut inner = Vec::new();
                rust_files(&path, &mut inner);
                files.extend(inner.into_iter().map(|p| (name.clone(), p)));
            }
            false => files.push((name, path)),
        }
    }
    for (file, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for target in upstream_imports(&text, &reexported) {
            if !may_import_in(UPSTREAM, &file, &target) {
                wrong.push(format!("upstream/{file}.rs imports upstream::{target}"));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "upstream files importing up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_upstream_checker_sees_the_old_circle() {
    // The driver giving a connection back by calling into the pinned pool, directly or through
    // a re-export, is what the split removed.
    let reexported = reexports("pub use pinned::PinnedConn;\npub use url::UpstreamUrl;\n");
    let text = "use crate::upstream::pinned::PinnedPool;\nuse super::PinnedConn;\n\
                use super::{url, UpstreamUrl};\nlet u = crate::upstream::Upstream::new(s);\n\
                #[cfg(test)]\nuse super::Driver;\n";
    let found = upstream_imports(text, &reexported);
    assert_eq!(found, ["pinned", "mod", "pinned", "mod"]);
    assert!(!may_import_in(UPSTREAM, "driver", "pinned"));
    assert!(!may_import_in(UPSTREAM, "pinned", "shared"));
    assert!(
        may_import_in(UPSTREAM, "pinned", "driver") && may_import_in(UPSTREAM, "driver", "url")
    );
}

/// The session's shape from the request-path redesign: a `Session` of at most 20 fields,
/// split by type into files of at most 500 lines each (tests in files of their own count
/// apart), so that growth shows here rather than in the next reader's afternoon.
#[test]
fn the_session_stays_split_by_type() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy/session");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let mut long = Vec::new();
    for file in &files {
        let lines = std::fs::read_to_string(file).unwrap().lines().count();
        let is_tests = file.file_name().is_some_and(|n| n == "tests.rs");
        if lines > 500 && !is_tests {
            long.push(format!("{} has {lines} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "session files over 500 lines:\n{}",
        long.join("\n")
    );

    let text = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let body = text
        .split("pub struct Session {")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("struct Session in session/mod.rs");
    let fields = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter(|l| {
            l.split(':').next().is_some_and(|name| {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            }) && l.contains(':')
        })
        .count();
    assert!(
        fields > 5,
        "the field count reads the struct ({fields} found)"
    );
    assert!(fields <= 20, "Session has {fields} fields (at most 20)");
}
