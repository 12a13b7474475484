//! The human's `program.md`: re-read before every experiment, and watched so that an edit made
//! during the night is acknowledged at once; the next experiment uses the new text.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::progress::Progress;

pub struct Program {
    path: PathBuf,
    last: Option<String>,
    /// Kept alive for as long as the loop runs; None where the platform cannot watch files.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Program {
    pub fn watch(path: &Path, progress: &Progress) -> Program {
        let name = path.file_name().map(|n| n.to_os_string());
        let progress = progress.clone();
        let mut last_notice: Option<Instant> = None;
        let on_event = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let ours = event.paths.iter().any(|p| p.file_name() == name.as_deref());
            let written = matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_));
            // Editors save in several steps; one notice per burst is enough.
            let quiet = last_notice.is_none_or(|t| t.elapsed() > Duration::from_secs(2));
            if ours && written && quiet {
                progress.println("program.md was edited; the next experiment uses the new text");
                last_notice = Some(Instant::now());
            }
        };
        // The directory, not the file: editors that save by renaming replace the file's inode.
        let dir = path.parent().unwrap_or(Path::new("."));
        let watcher = notify::recommended_watcher(on_event)
            .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w))
            .inspect_err(|e| eprintln!("note: not watching program.md ({e}); it is still re-read before every experiment"))
            .ok();
        Program {
            path: path.to_path_buf(),
            last: std::fs::read_to_string(path).ok(),
            _watcher: watcher,
        }
    }

    /// The text as it is now (empty if the file is missing), and whether it differs from the
    /// text of the previous call.
    pub fn read(&mut self) -> (String, bool) {
        let now = std::fs::read_to_string(&self.path).ok();
        let changed = now != self.last;
        self.last = now;
        (self.last.clone().unwrap_or_default(), changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_seen_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("program.md");
        std::fs::write(&path, "first").unwrap();
        let mut program = Program::watch(&path, &Progress::new());
        assert_eq!(program.read(), ("first".to_string(), false));
        std::fs::write(&path, "second").unwrap();
        assert_eq!(program.read(), ("second".to_string(), true));
        assert_eq!(program.read(), ("second".to_string(), false));
    }
}
