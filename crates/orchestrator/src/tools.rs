//! The agent's tools on the working tree. Reads reach the repository's files; writes reach only
//! `crates/train/src/`, and every refusal is a message the agent can read and act on.

use std::path::{Component, Path, PathBuf};

use crate::git::EDITABLE;

pub struct Workspace {
    repo: PathBuf,
}

impl Workspace {
    pub fn new(repo: &Path) -> Workspace {
        Workspace {
            repo: repo.to_path_buf(),
        }
    }

    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Files the agent may read, the editable ones marked.
    pub fn list_files(&self) -> Result<String, String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["ls-files", "--cached", "--others", "--exclude-standard"])
            .output()
            .map_err(|e| format!("cannot list files: {e}"))?;
        let listing = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|f| {
                if f.starts_with(EDITABLE) {
                    format!("{f}  (editable)")
                } else {
                    f.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        Ok(listing)
    }

    pub fn read_file(&self, path: &str) -> Result<String, String> {
        let full = self.resolve(path)?;
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read {path}: {e}"))
    }

    /// Replaces the one exact occurrence of `old` with `new`.
    pub fn edit_file(&self, path: &str, old: &str, new: &str) -> Result<String, String> {
        let full = self.writable(path)?;
        if old.is_empty() {
            return Err("old_string is empty; give the exact text to replace".into());
        }
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("cannot read {path}: {e}"))?;
        match text.matches(old).count() {
            0 => Err(format!(
                "old_string was not found in {path}; read the file and copy the text exactly"
            )),
            1 => {
                std::fs::write(&full, text.replacen(old, new, 1))
                    .map_err(|e| format!("cannot write {path}: {e}"))?;
                Ok(format!("edited {path}"))
            }
            n => Err(format!(
                "old_string occurs {n} times in {path}; include more context to make it unique"
            )),
        }
    }

    pub fn write_file(&self, path: &str, content: &str) -> Result<String, String> {
        let full = self.writable(path)?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&full, content).map_err(|e| format!("cannot write {path}: {e}"))?;
        Ok(format!("wrote {path} ({} bytes)", content.len()))
    }

    /// A repository-relative path without `..`, absolute parts or a way into `.git`.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let p = Path::new(path);
        let plain = p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain || path.is_empty() {
            return Err(format!(
                "{path:?} is not allowed: use a path relative to the repository root, without `..`"
            ));
        }
        if p.components()
            .next()
            .is_some_and(|c| c.as_os_str() == ".git")
        {
            return Err("the .git directory is off limits".into());
        }
        Ok(self.repo.join(p))
    }

    /// Like `resolve`, and inside `crates/train/src` even after following symlinks.
    fn writable(&self, path: &str) -> Result<PathBuf, String> {
        let full = self.resolve(path)?;
        let refuse = || {
            Err(format!(
                "{path} is outside {EDITABLE}/; only the trainer's source may be changed"
            ))
        };
        if !Path::new(path).starts_with(EDITABLE) {
            return refuse();
        }
        let root = self
            .repo
            .join(EDITABLE)
            .canonicalize()
            .map_err(|e| format!("{EDITABLE}: {e}"))?;
        // The deepest existing ancestor, with symlinks resolved, must still be inside.
        let mut existing = full.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(&self.repo);
        }
        match existing.canonicalize() {
            Ok(real) if real.starts_with(&root) => Ok(full),
            _ => refuse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/train/src")).unwrap();
        std::fs::create_dir_all(dir.path().join("crates/prepare/src")).unwrap();
        std::fs::write(
            dir.path().join("crates/train/src/main.rs"),
            "const LR: f64 = 0.1;\nconst LR2: f64 = 0.1;\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let ws = Workspace::new(dir.path());
        (dir, ws)
    }

    #[test]
    fn edits_need_one_exact_occurrence() {
        let (_dir, ws) = workspace();
        let path = "crates/train/src/main.rs";
        assert!(
            ws.edit_file(path, "0.1", "0.2")
                .unwrap_err()
                .contains("2 times")
        );
        assert!(
            ws.edit_file(path, "0.3", "0.2")
                .unwrap_err()
                .contains("not found")
        );
        ws.edit_file(path, "LR: f64 = 0.1", "LR: f64 = 0.2")
            .unwrap();
        assert!(
            ws.read_file(path)
                .unwrap()
                .starts_with("const LR: f64 = 0.2;")
        );
        ws.write_file("crates/train/src/model/attn.rs", "// new")
            .unwrap();
    }

    #[test]
    fn writes_outside_the_trainer_are_refused() {
        let (dir, ws) = workspace();
        for path in [
            "Cargo.toml",
            "crates/prepare/src/lib.rs",
            "crates/train/Cargo.toml",
            "crates/train/src/../../prepare/src/x.rs",
            "/etc/passwd",
            ".git/config",
        ] {
            assert!(ws.write_file(path, "x").is_err(), "{path} was writable");
        }
        std::os::unix::fs::symlink(
            dir.path().join("crates/prepare/src"),
            dir.path().join("crates/train/src/escape"),
        )
        .unwrap();
        let err = ws
            .write_file("crates/train/src/escape/lib.rs", "x")
            .unwrap_err();
        assert!(err.contains("outside"), "{err}");
        assert!(!dir.path().join("crates/prepare/src/lib.rs").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap(),
            "[workspace]\n"
        );
    }
}
