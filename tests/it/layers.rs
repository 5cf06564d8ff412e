//! The module layers of `src/` (see `src/lib.rs`): every `crate::…` path a file uses must
//! point to its own top-level module or to one in a layer below it, so the import graph has no
//! cycle, the data plane (`proxy` and below) never reaches up into the program's wiring
//! (`server`), and modules that share a layer (peers) never import each other.

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
    &["config"],
    &["proxy"],
    // The two programs, on the layers below: `server` runs the proxy (and follows a
    // Sentinel's failovers), `migrate` is `rekey migrate`. Both find a Sentinel's primary
    // with `upstream::sentinel`; only `main.rs` runs either.
    &["server", "migrate"],
];

/// The layer a top-level module is in.
fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// Whether code in `module` may use `crate::{target}`: its own module, or a lower layer.
fn may_import(module: &str, target: &str) -> bool {
    target == module || rank(target) < rank(module)
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
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
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
