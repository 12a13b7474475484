//! Files replaced whole or not at all: written under a temporary name beside the target, synced,
//! then renamed over it. A reader (or a run resumed after a kill) sees the old file or the new
//! one, never half of one; and a binary that is still executing, which cannot be overwritten, can
//! still be replaced this way.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Replaces `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial(path);
    let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("writing {}", tmp.display()))?;
    rename(&tmp, path)
}

/// Replaces `to` with a copy of `from`, permissions included.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    let tmp = partial(to);
    fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    rename(&tmp, to)
}

/// `<name>.partial` beside `path`: the whole name is kept, so no two targets share one.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn rename(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_whole_files_and_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.tsv");
        super::write(&path, b"old").unwrap();
        super::write(&path, b"new").unwrap();
        let copy = dir.path().join("copy");
        super::copy(&path, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
