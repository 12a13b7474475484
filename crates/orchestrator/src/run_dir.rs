//! The layout of a run's directory, `runs/<tag>/`, in one place: one method per file of the table
//! in docs/orchestrator.md#files, so that a reader of the records (`report`, a live page, a later
//! night's memory) finds them where the loop wrote them.

use std::path::{Path, PathBuf};

/// `runs/<tag>/`, or a directory laid out like it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run `tag` of the repository `repo`.
    pub fn new(repo: &Path, tag: &str) -> RunDir {
        RunDir::at(&RunDir::all(repo).join(tag))
    }

    /// A run directory at `root`.
    pub fn at(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
        }
    }

    /// `runs/`, where every tag of `repo` has its directory.
    pub fn all(repo: &Path) -> PathBuf {
        repo.join("runs")
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `experiments.jsonl`: one record per experiment, append-only.
    pub fn experiments(&self) -> PathBuf {
        self.root.join("experiments.jsonl")
    }

    /// `results.tsv`: the original autoresearch's format.
    pub fn results_tsv(&self) -> PathBuf {
        self.root.join("results.tsv")
    }

    /// `pending/`: the experiments under way.
    pub fn pending_dir(&self) -> PathBuf {
        self.root.join("pending")
    }

    /// `pending/<seq>.json`: experiment `seq`, under way.
    pub fn pending(&self, seq: u64) -> PathBuf {
        self.pending_dir().join(format!("{seq}.json"))
    }

    /// `pending.json`: where runs before workers kept their one experiment under way.
    pub fn legacy_pending(&self) -> PathBuf {
        self.root.join("pending.json")
    }

    /// `pending/<seq>.<index>.job`: where an executor finds run `index` of experiment `seq`
    /// again after a restart.
    pub fn handle(&self, seq: u64, index: usize) -> PathBuf {
        self.pending_dir().join(format!("{seq}.{index}.job"))
    }

    /// Whether `name`, in [`RunDir::pending_dir`], is a handle of experiment `seq`'s runs.
    pub fn is_handle_of(name: &str, seq: u64) -> bool {
        name.strip_prefix(&format!("{seq}."))
            .is_some_and(|rest| rest.ends_with(".job"))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log of run `index` of experiment `seq`, numbered in the order they ran: `<seq>.log`
    /// for the first (or why nothing ran), `<seq>.<index>.log` for the rest.
    pub fn log(&self, seq: u64, index: usize) -> PathBuf {
        let name = match index {
            0 => format!("{seq}.log"),
            k => format!("{seq}.{k}.log"),
        };
        self.logs_dir().join(name)
    }

    /// Which run of experiment `seq` the log named `name` is, see [`RunDir::log`].
    pub fn log_index(name: &str, seq: u64) -> Option<usize> {
        let rest = name.strip_suffix(".log")?.strip_prefix(&seq.to_string())?;
        match rest {
            "" => Some(0),
            k => k.strip_prefix('.')?.parse().ok().filter(|&k| k > 0),
        }
    }

    /// `bin/`: the evaluator, the kept trainers, and each running trainer's copy and export.
    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// `bin/evaluate`: the protected evaluator.
    pub fn evaluator(&self) -> PathBuf {
        self.bin_dir().join("evaluate")
    }

    /// `bin/best-<commit>`: the trainer of kept commit `commit`, run beside later changes.
    pub fn best_trainer(&self, commit: &str) -> PathBuf {
        self.bin_dir().join(format!("best-{commit}"))
    }

    /// The name of [`RunDir::best_trainer`]'s file: its commit, when `name` is one.
    pub fn best_trainer_commit(name: &str) -> Option<&str> {
        name.strip_prefix("best-")
    }

    /// `bin/beside-<seq>`: the best's trainer experiment `seq` runs beside it.
    pub fn beside(&self, seq: u64) -> PathBuf {
        self.bin_dir().join(format!("beside-{seq}"))
    }

    /// `bin/train-<seq>`: the running trainer's copy.
    pub fn trainer_copy(&self, seq: u64) -> PathBuf {
        self.bin_dir().join(format!("train-{seq}"))
    }

    /// `bin/export-<seq>.<index>/`: the trainer's only writable directory while it runs.
    pub fn export(&self, seq: u64, index: usize) -> PathBuf {
        self.bin_dir().join(format!("export-{seq}.{index}"))
    }

    /// `bin/model-<seq>.<index>.pt`: the model run `index` exported, until the experiment is
    /// decided.
    pub fn model(&self, seq: u64, index: usize) -> PathBuf {
        self.bin_dir().join(format!("model-{seq}.{index}.pt"))
    }

    /// Worker `k`'s git worktree: `worktree/` for the first, `workers/<k>/` for the others.
    pub fn worktree(&self, k: usize) -> PathBuf {
        match k {
            0 => self.root.join("worktree"),
            k => self.root.join("workers").join(k.to_string()),
        }
    }

    /// A file of worktree `worktree`'s own (see [`RunDir::worktree`]), beside it and out of its
    /// git tree: the trainer it built last (`worktree.train`), its rule tests (`.rules`), a
    /// change being re-applied (`.patch`).
    pub fn beside_worktree(worktree: &Path, extension: &str) -> PathBuf {
        worktree.with_extension(extension)
    }

    /// `slurm/`: the Slurm jobs' scripts and results, shared with the nodes.
    pub fn slurm_dir(&self) -> PathBuf {
        self.root.join("slurm")
    }

    /// `slurm/<seq>.<index>/`: run `index` of experiment `seq` as a Slurm job.
    pub fn slurm_trial(&self, seq: u64, index: usize) -> PathBuf {
        self.slurm_dir().join(format!("{seq}.{index}"))
    }

    /// `slurm/holdout-<run>/`: the holdout job scoring run `run`'s model.
    pub fn slurm_holdout(&self, run: &str) -> PathBuf {
        self.slurm_dir().join(format!("holdout-{run}"))
    }

    /// `slurm/probe/`: the probe job's at start.
    pub fn slurm_probe(&self) -> PathBuf {
        self.slurm_dir().join("probe")
    }

    /// `slurm/jobs.log`: every job submitted.
    pub fn slurm_journal(&self) -> PathBuf {
        self.slurm_dir().join("jobs.log")
    }

    /// `offline_agent.json`: the offline agent's memory.
    pub fn offline_agent(&self) -> PathBuf {
        self.root.join("offline_agent.json")
    }

    /// `progress.png`, drawn by `report`.
    pub fn progress_plot(&self) -> PathBuf {
        self.root.join("progress.png")
    }

    /// `notify.log`: every alert sent, and how its command ended.
    pub fn notify_log(&self) -> PathBuf {
        self.root.join("notify.log")
    }

    /// `notify.json`: the latest alert, the notify command's stdin.
    pub fn notify_event(&self) -> PathBuf {
        self.root.join("notify.json")
    }

    /// `confirm.jsonl`: `confirm`'s runs and results.
    pub fn confirmations(&self) -> PathBuf {
        self.root.join("confirm.jsonl")
    }

    /// `morning/`: the worktree, trainers (`bin/`) and run logs (`logs/`) of `confirm` and
    /// `finalize`.
    pub fn morning(&self) -> PathBuf {
        self.root.join("morning")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_documented_one() {
        let run = RunDir::new(Path::new("/repo"), "dec6");
        let files = [
            (run.experiments(), "experiments.jsonl"),
            (run.results_tsv(), "results.tsv"),
            (run.pending(3), "pending/3.json"),
            (run.handle(3, 1), "pending/3.1.job"),
            (run.log(3, 0), "logs/3.log"),
            (run.log(3, 2), "logs/3.2.log"),
            (run.best_trainer("abc"), "bin/best-abc"),
            (run.evaluator(), "bin/evaluate"),
            (run.export(3, 1), "bin/export-3.1"),
            (run.trainer_copy(3), "bin/train-3"),
            (run.model(3, 1), "bin/model-3.1.pt"),
            (run.worktree(0), "worktree"),
            (run.worktree(2), "workers/2"),
            (
                RunDir::beside_worktree(&run.worktree(2), "train"),
                "workers/2.train",
            ),
            (run.slurm_trial(3, 1), "slurm/3.1"),
            (run.slurm_journal(), "slurm/jobs.log"),
            (run.notify_log(), "notify.log"),
            (run.notify_event(), "notify.json"),
            (run.confirmations(), "confirm.jsonl"),
            (run.morning(), "morning"),
            (run.offline_agent(), "offline_agent.json"),
            (run.progress_plot(), "progress.png"),
        ];
        for (path, relative) in files {
            assert_eq!(path, Path::new("/repo/runs/dec6").join(relative));
        }
        assert!(RunDir::is_handle_of("3.1.job", 3));
        assert!(!RunDir::is_handle_of("13.1.job", 3) && !RunDir::is_handle_of("3.json", 3));
        assert_eq!(RunDir::best_trainer_commit("best-abc"), Some("abc"));
        assert_eq!(RunDir::log_index("3.log", 3), Some(0));
        assert_eq!(RunDir::log_index("3.2.log", 3), Some(2));
        for (name, seq) in [("33.log", 3), ("3.0.log", 3), ("3.x.log", 3), ("3.log", 33)] {
            assert_eq!(RunDir::log_index(name, seq), None, "{name}");
        }
    }
}
