//! The documentation (`README.md` and the topic pages in `docs/`) is checked like code, because
//! it goes stale silently otherwise: a page moves and the links into it break, or a config key
//! is added to the schema and never makes it into the reference.
//!
//! - Every relative link in `README.md` and `docs/*.md` must point at a file or directory that
//!   exists in the repository, and a `#anchor` must match a heading of the target page
//!   (GitHub's slugs: lowercase, spaces to `-`, punctuation but `-` and `_` dropped, `-1`,
//!   `-2`… for repeated headings). `http(s)://` and `mailto:` links are not followed.
//! - Every `docs/*.md` page is linked from `README.md`, the front page.
//! - Every key the config file accepts is documented in the reference table of
//!   `docs/configuration.md`, and every key that table documents is accepted. The accepted keys
//!   come from the schema itself (`rekey::config::schema::FileConfig`, whose structs all
//!   `deny_unknown_fields`): an unknown key is put into each table of a probe file and serde's
//!   "unknown field, expected one of …" error lists the table's keys (renames and aliases
//!   included), recursing into the fields that are tables or arrays of tables.

use rekey::config::schema::FileConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `docs/*.md`, as paths relative to the repository root.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| PathBuf::from("docs").join(path.file_name().unwrap()))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", rel.display()))
}

/// The lines of a Markdown text that are prose (1-based line numbers): fenced code blocks are
/// left out, and inline code spans are blanked out (a link's text may hold code, and code may
/// hold something that looks like a link).
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|c| *c == '`' || *c == '~')
            .collect();
        if let Some(open) = &fence {
            let closes = marker.len() >= open.len()
                && marker.chars().all(|c| open.starts_with(c))
                && trimmed[marker.len()..].trim().is_empty();
            if closes {
                fence = None;
            }
            continue;
        }
        if marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap()) {
            fence = Some(marker);
            continue;
        }
        out.push((i + 1, blank_code_spans(line)));
    }
    out
}

/// `line` with the contents of its code spans (between equal runs of backticks) replaced by
/// spaces; the backticks stay.
fn blank_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        let start = i + run;
        let mut j = start;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let n = chars[j..].iter().take_while(|c| **c == '`').count();
                if n == run {
                    close = Some(j);
                    break;
                }
                j += n;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                for c in &mut out[start..end] {
                    *c = ' ';
                }
                i = end + run;
            }
            None => i = start,
        }
    }
    out.into_iter().collect()
}

/// The link targets of a Markdown text, with their line numbers: inline links and images
/// (`[text](target "title")`) and reference definitions (`[label]: target`).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        if let Some(label) = trimmed.strip_prefix('[') {
            let definition = label
                .find(']')
                .and_then(|close| label[close + 1..].strip_prefix(':'));
            if let Some(definition) = definition {
                if let Some(target) = definition.split_whitespace().next() {
                    out.push((n, target.trim_matches(['<', '>']).to_string()));
                }
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let target = if let Some(angled) = after.strip_prefix('<') {
                angled.split('>').next().unwrap_or_default()
            } else {
                let mut depth = 0usize;
                let end = after
                    .char_indices()
                    .find(|&(_, c)| match c {
                        '(' => {
                            depth += 1;
                            false
                        }
                        ')' if depth == 0 => true,
                        ')' => {
                            depth -= 1;
                            false
                        }
                        c => c.is_whitespace(),
                    })
                    .map_or(after.len(), |(i, _)| i);
                &after[..end]
            };
            out.push((n, target.to_string()));
            rest = after;
        }
    }
    out
}

/// GitHub's anchor for a heading text: lowercase, links reduced to their text, every character
/// but letters, digits, `-`, `_` and spaces dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](url)` reads as `text`.
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown page's ATX headings (`#` to `######`), in GitHub's spelling,
/// repeated headings numbered as GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, _) in prose_lines(text) {
        let Some(heading) = heading_text(lines[n - 1]) else {
            continue;
        };
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

/// The text of an ATX heading line (`## Text ##` gives `Text`), or `None` for other lines.
fn heading_text(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|c| *c == '#').count();
    let rest = &trimmed[level..];
    if level == 0 || level > 6 || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some(rest.trim().trim_end_matches('#').trim())
}

/// `%20` and friends decoded, as a browser does with a link's path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).unwrap_or_default();
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `base` joined with `rel`, `.` and `..` resolved without touching the file system; `None`
/// when `..` climbs above the repository root.
fn normalize(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    for component in base.join(rel).components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
}

/// Whether `anchor` is one GitHub gives a line or range of a non-Markdown file (`#L12-L20`).
fn is_line_anchor(anchor: &str) -> bool {
    anchor.split('-').all(|part| {
        part.strip_prefix('L')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// What is wrong with one link of `file` (a path relative to the root), if anything.
fn check_link(file: &Path, target: &str) -> Option<String> {
    if is_external(target) {
        return None;
    }
    if target.is_empty() {
        return Some("empty link target".into());
    }
    if let Some(colon) = target.find(':') {
        if !target[..colon].contains(['/', '#']) {
            return Some("not a relative link (an unknown scheme)".into());
        }
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let path = percent_decode(path);
    let resolved = if path.is_empty() {
        Some(file.to_path_buf())
    } else if let Some(from_root) = path.strip_prefix('/') {
        // GitHub reads `/x` in a file's link as the repository root.
        normalize(Path::new(""), from_root)
    } else {
        normalize(file.parent().unwrap_or(Path::new("")), &path)
    };
    let Some(resolved) = resolved else {
        return Some(format!("`{path}` climbs out of the repository"));
    };
    let full = root().join(&resolved);
    if !full.exists() {
        return Some(format!("{} does not exist", resolved.display()));
    }
    let anchor = anchor?;
    if resolved.extension().is_some_and(|e| e == "md") && full.is_file() {
        let found = anchors(&std::fs::read_to_string(&full).unwrap());
        if found.contains(anchor) {
            return None;
        }
        let list: Vec<&str> = found.iter().map(String::as_str).collect();
        return Some(format!(
            "no heading in {} has the anchor `#{anchor}` (its anchors: {})",
            resolved.display(),
            list.join(", ")
        ));
    }
    if full.is_file() && is_line_anchor(anchor) {
        return None;
    }
    Some(format!(
        "`#{anchor}` names no heading: {} is not a Markdown page",
        resolved.display()
    ))
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        for (line, target) in links(&read(&file)) {
            checked += 1;
            if let Some(problem) = check_link(&file, &target) {
                broken.push(format!(
                    "{}:{line}: link `{target}`: {problem}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found in README.md and docs/: is the link parser broken?"
    );
    assert!(
        broken.is_empty(),
        "{} broken link(s) in the documentation:\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = Path::new("README.md");
    let linked: BTreeSet<PathBuf> = links(&read(readme))
        .into_iter()
        .filter(|(_, t)| !is_external(t))
        .filter_map(|(_, t)| {
            let path = percent_decode(t.split('#').next().unwrap_or_default());
            normalize(Path::new(""), &path)
        })
        .collect();
    let missing: Vec<String> = doc_files()
        .into_iter()
        .filter(|f| f.starts_with("docs") && !linked.contains(f))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "docs page(s) not linked from README.md: {}",
        missing.join(", ")
    );
}

#[test]
fn anchors_follow_github_slugs() {
    assert_eq!(slug("Limits (honest)"), "limits-honest");
    assert_eq!(slug("`rekey migrate`"), "rekey-migrate");
    assert_eq!(
        slug("What a client sees: the same as its own Redis"),
        "what-a-client-sees-the-same-as-its-own-redis"
    );
    assert_eq!(
        slug("Amazon ElastiCache (in-transit encryption, ACL user)"),
        "amazon-elasticache-in-transit-encryption-acl-user"
    );
    assert_eq!(slug("tls_listen and [TLS](tls.md)"), "tls_listen-and-tls");
    let page = "# A\n## Same\n```\n# not a heading\n```\n## Same\n";
    let found: Vec<String> = anchors(page).into_iter().collect();
    assert_eq!(found, ["a", "same", "same-1"]);
    let found = links("[x](a.md#b) `[y](no.md)` ![i](img.png \"t\")\n[ref]: ref.md\n");
    let targets: Vec<&str> = found.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(targets, ["a.md#b", "img.png", "ref.md"]);
    assert!(check_link(Path::new("README.md"), "docs/nope.md").is_some());
    assert!(check_link(Path::new("README.md"), "docs/rules.md#no-such-heading").is_some());
    assert!(check_link(Path::new("docs/rules.md"), "../../outside.md").is_some());
    assert!(check_link(Path::new("README.md"), "https://example.com/x#y").is_none());
}

/// One step into the config file: a table field, or an array of tables (`[[apps]]`).
#[derive(Clone)]
struct Step {
    name: String,
    array: bool,
}

/// The keys serde accepts in the table at `path`, or `None` when what lies there is no table
/// with `deny_unknown_fields` (a string, a list of strings, an enum…).
fn table_keys(path: &[Step]) -> Option<Vec<String>> {
    const PROBE: &str = "rekey_docs_probe";
    let mut body = format!("{PROBE} = 0");
    for step in path.iter().rev() {
        let table = format!("{{ {body} }}");
        let value = if step.array {
            format!("[{table}]")
        } else {
            table
        };
        body = format!("{:?} = {value}", step.name);
    }
    let error = match toml::from_str::<FileConfig>(&body) {
        Ok(_) => panic!("the config schema accepted the unknown key in {body:?}"),
        Err(e) => e.message().to_string(),
    };
    let rest = error.split(&format!("unknown field `{PROBE}`")).nth(1)?;
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    let names = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some(names)
}

fn dotted(path: &[Step]) -> String {
    path.iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// Every leaf key of the config file, dotted (`limits.max_clients`, `tls.upstream.ca_file`,
/// `apps.listen` for `listen` in an `[[apps]]` entry), with how the reference would show it.
fn accepted_keys() -> BTreeMap<String, String> {
    fn walk(path: &mut Vec<Step>, out: &mut BTreeMap<String, String>) {
        let keys = table_keys(path).unwrap_or_else(|| {
            panic!(
                "`{}` is no longer a table in the config schema",
                dotted(path)
            )
        });
        for name in keys {
            let mut nested = false;
            for array in [false, true] {
                path.push(Step {
                    name: name.clone(),
                    array,
                });
                if table_keys(path).is_some() {
                    walk(path, out);
                    nested = true;
                }
                path.pop();
                if nested {
                    break;
                }
            }
            if !nested {
                path.push(Step {
                    name: name.clone(),
                    array: false,
                });
                let shown = match path.iter().rposition(|s| s.array) {
                    Some(i) => {
                        format!("`[[{}]]` `{}`", dotted(&path[..=i]), dotted(&path[i + 1..]))
                    }
                    None => format!("`{}`", dotted(path)),
                };
                out.insert(dotted(path), shown);
                path.pop();
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&mut Vec::new(), &mut out);
    out
}

/// The keys the reference table of `docs/configuration.md` documents, dotted as
/// [`accepted_keys`] spells them. A row's first cell names them in backticks: `key`,
/// `section.key`, further keys of the same section by their short name (`tls.upstream.cert_file`,
/// `key_file`), and `[[apps]]` or `[section]` before keys of that section.
fn documented_keys() -> BTreeMap<String, usize> {
    let page = Path::new("docs/configuration.md");
    let text = read(page);
    let mut out = BTreeMap::new();
    let mut in_reference = false;
    let mut rows = 0;
    let lines: Vec<&str> = text.lines().collect();
    for (n, _) in prose_lines(&text) {
        let line = lines[n - 1];
        if let Some(heading) = heading_text(line) {
            in_reference = slug(heading) == "configuration-reference";
            continue;
        }
        if !in_reference || !line.starts_with('|') {
            continue;
        }
        let first = line.split('|').nth(1).unwrap_or_default().trim();
        if first == "key" || first.chars().all(|c| matches!(c, '-' | ':' | ' ')) {
            continue;
        }
        rows += 1;
        let mut section: Option<String> = None;
        for token in first.split('`').skip(1).step_by(2) {
            let token = token.trim();
            if let Some(name) = token
                .strip_prefix("[[")
                .and_then(|t| t.strip_suffix("]]"))
                .or_else(|| token.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
            {
                section = Some(name.to_string());
                continue;
            }
            if !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                continue;
            }
            let key = match (&section, token.rsplit_once('.')) {
                (_, Some((parent, _))) => {
                    section = Some(parent.to_string());
                    token.to_string()
                }
                (Some(section), None) => format!("{section}.{token}"),
                (None, None) => token.to_string(),
            };
            out.insert(key, n);
        }
    }
    assert!(
        rows > 0,
        "docs/configuration.md has no table under a heading \"Configuration reference\""
    );
    out
}

#[test]
fn config_schema_walk_finds_the_known_sections() {
    let keys = accepted_keys();
    for key in [
        "listen",
        "upstream",
        "limits.max_clients",
        "pool.connections",
        "metrics.command_latency",
        "users.password",
        "apps.tls_listen",
        "rules.match",
        "tls.upstream.ca_file",
        "tls.server.handshake_timeout_ms",
    ] {
        assert!(
            keys.contains_key(key),
            "walking the config schema did not find `{key}` (found: {:?}); has serde's \
             unknown-field message changed?",
            keys.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_config_key_is_documented() {
    let documented = documented_keys();
    let missing: Vec<String> = accepted_keys()
        .into_iter()
        .filter(|(key, _)| !documented.contains_key(key))
        .map(|(key, shown)| {
            if shown == format!("`{key}`") {
                shown
            } else {
                format!("{shown} (`{key}`)")
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config key(s) the schema accepts but the reference table in docs/configuration.md \
         does not document (add a row): {}",
        missing.join(", ")
    );
}

#[test]
fn every_documented_config_key_exists() {
    let accepted = accepted_keys();
    let stale: Vec<String> = documented_keys()
        .into_iter()
        .filter(|(key, _)| !accepted.contains_key(key))
        .map(|(key, line)| format!("`{key}` (docs/configuration.md:{line})"))
        .collect();
    assert!(
        stale.is_empty(),
        "the reference in docs/configuration.md documents key(s) the config schema does not \
         accept: {}",
        stale.join(", ")
    );
}
