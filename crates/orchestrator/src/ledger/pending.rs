//! The experiments under way, `pending/<seq>.json` (re-run on `--resume`), and the executors'
//! handles beside them, `pending/<seq>.<index>.job`.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Pending;
use crate::run_dir::RunDir;

/// The pending experiments of one run: files only, nothing in memory, so every worker may use
/// them at any time.
#[derive(Clone)]
pub struct Pendings {
    dir: RunDir,
}

impl Pendings {
    pub fn new(dir: &RunDir) -> Pendings {
        Pendings { dir: dir.clone() }
    }

    /// The experiments under way when the run stopped, by number: `pending/<seq>.json`, one per
    /// experiment in flight (and `pending.json`, where runs before workers kept their one). Each is
    /// written atomically, so one that does not parse was changed by hand: the run stops rather
    /// than forget the experiment.
    pub fn all(&self) -> Result<Vec<Pending>> {
        let mut paths = vec![self.dir.legacy_pending()];
        match fs::read_dir(self.dir.pending_dir()) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "json") {
                        paths.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("reading the pending experiments"),
        }
        let mut pendings = Vec::new();
        for path in paths {
            match fs::read(&path) {
                Ok(bytes) => {
                    pendings.push(serde_json::from_slice::<Pending>(&bytes).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: {e}; fix it, or remove it to drop the interrupted experiment, \
                             then --resume",
                            path.display()
                        )
                    })?)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        pendings.sort_by_key(|p| p.seq);
        pendings.dedup_by_key(|p| p.seq);
        Ok(pendings)
    }

    /// Records `pending` as under way, until [`Pendings::clear`].
    pub fn write(&self, pending: &Pending) -> Result<()> {
        let path = self.dir.pending(pending.seq);
        fs::create_dir_all(self.dir.pending_dir())?;
        prepare::atomic::write(&path, &serde_json::to_vec(pending)?)
    }

    /// Experiment `seq` is recorded: its pending record goes, with its executors' handles (which
    /// the caller has let go of, see [`Pendings::handles`]).
    pub fn clear(&self, seq: u64) -> Result<()> {
        let mut paths = self.handles(seq)?;
        paths.push(self.dir.pending(seq));
        let legacy = self.dir.legacy_pending();
        if fs::read(&legacy)
            .ok()
            .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
            .is_some_and(|p| p.seq == seq)
        {
            paths.push(legacy);
        }
        for path in paths {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The executors' handles of experiment `seq`'s runs, see [`RunDir::handle`].
    pub fn handles(&self, seq: u64) -> Result<Vec<PathBuf>> {
        let Ok(entries) = fs::read_dir(self.dir.pending_dir()) else {
            return Ok(Vec::new());
        };
        let mut handles = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if RunDir::is_handle_of(&name, seq) {
                handles.push(path);
            }
        }
        Ok(handles)
    }
}
