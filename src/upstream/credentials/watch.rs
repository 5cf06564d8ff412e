//! Watching a file for a new content: the config file and the `password_file` /
//! `user_file` of `[upstream_auth]` both go through [`watch_file`].
//!
//! It watches the file's directory, so editors that write a new file and rename it over the
//! old one are seen too, and so is a Kubernetes ConfigMap or Secret update: the kubelet never
//! touches `password` (a symlink to `..data/password`) but renames a new `..data` symlink over
//! the old one, so any change in the directory that makes the path resolve to another file
//! counts. Callers debounce the events.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedSender;

/// Sends `()` on `tx` whenever `path` may have a new content.
pub fn watch_file(path: &Path, tx: UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    let file_name = path.file_name().map(|n| n.to_os_string());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The file the path resolves to through symlinks, to see a swap of a symlink on the way.
    let resolved = Mutex::new(std::fs::canonicalize(path).ok());
    let path = path.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let named = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
        let now = std::fs::canonicalize(&path).ok();
        let retargeted = {
            let mut last = resolved.lock().expect("watcher state poisoned");
            let changed = now.is_some() && now != *last;
            if changed {
                *last = now;
            }
            changed
        };
        if named || retargeted {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
