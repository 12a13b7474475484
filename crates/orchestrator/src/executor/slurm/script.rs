//! A job's script: the jails' command lines as the orchestrator would run them here, as lines of
//! shell, and the `done` file written last.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Slurm;
use crate::executor::Job;
use crate::executor::trial::MODEL_FILE;
use crate::scoring;
use prepare::Split;

/// Bytes of the trainer's stdout kept for its result line.
pub(super) const STDOUT_TAIL: usize = 1 << 20;
/// Bytes of the evaluator's stderr kept for the failure message.
pub(super) const STDERR_TAIL: usize = 64 << 10;

impl Slurm {
    /// The trial's script: the trainer, then, when it exited 0 and exported a model, the
    /// evaluator; `done` last.
    pub(super) fn trial_script(
        &self,
        job: &Job,
        dir: &Path,
        trainer: &tokio::process::Command,
        evaluator: &tokio::process::Command,
    ) -> Result<String> {
        let mut s = self.header(
            dir,
            &format!(
                "experiment {} run {} (seed {}): the trainer in its jail, then the protected \
                 evaluator in its own",
                job.seq, job.index, job.seed
            ),
        )?;
        let log = quote(&job.log)?;
        let trainer = render(trainer, Some(job.limits.train))?;
        writeln!(
            s,
            "# The trainer's stdout goes to the log (this job's output) and its last MiB to ./stdout,\n\
             # where its result line is read; its stderr goes to the log.\n\
             train_start=$(now)\n\
             {trainer} | tee -a {log} | tail -c {STDOUT_TAIL} > stdout\n\
             train_rc=${{PIPESTATUS[0]}}\n\
             train_end=$(now)\n\
             rm -f train\n\
             # Only a plain file is taken (not a link the trainer planted); whatever else it left goes.\n\
             if [ -f export/{MODEL_FILE} ] && [ ! -L export/{MODEL_FILE} ]; then mv -f export/{MODEL_FILE} {MODEL_FILE}; fi\n\
             rm -rf export\n\
             if [ \"$train_rc\" = 0 ] && [ -f {MODEL_FILE} ] && [ ! -L {MODEL_FILE} ]; then"
        )?;
        self.evaluate(&mut s, evaluator, job.limits.eval)?;
        writeln!(s, "fi\n{DONE}")?;
        Ok(s)
    }

    /// The holdout's script: the evaluator on the test split, scoring `model`; `done` last.
    pub(super) fn holdout_script(
        &self,
        dir: &Path,
        model: &Path,
        limit: Duration,
    ) -> Result<String> {
        let evaluator = self.evaluator.command(model, Split::Test, 3);
        let what = format!(
            "the holdout: the protected evaluator on the test split, model {}",
            model.display()
        );
        let mut script = self.header(dir, &what)?;
        script.push_str("if true; then\n");
        self.evaluate(&mut script, &evaluator, limit)?;
        script.push_str(&format!("fi\n{DONE}\n"));
        Ok(script)
    }

    /// The lines that run the evaluator: its verdict through descriptor 3 into ./verdict (no
    /// jail sees that file), its stderr's end into ./evaluator.stderr, both bounded because the
    /// scored model runs inside it.
    pub(super) fn evaluate(
        &self,
        s: &mut String,
        evaluator: &tokio::process::Command,
        limit: Duration,
    ) -> Result<()> {
        let evaluator = render(evaluator, Some(limit))?;
        writeln!(
            s,
            "  eval_start=$(now)\n  \
             {{ {evaluator} 3>&1 >/dev/null 2>&4 | head -c {} > verdict\n    \
             echo \"${{PIPESTATUS[0]}}\" > eval_rc\n  \
             }} 4>&1 | tail -c {STDERR_TAIL} > evaluator.stderr\n  \
             eval_rc=$(cat eval_rc)\n  \
             eval_end=$(now)",
            scoring::MAX_VERDICT
        )?;
        Ok(())
    }

    /// A script's first lines: where it runs and what it is.
    pub(super) fn header(&self, dir: &Path, what: &str) -> Result<String> {
        Ok(format!(
            "#!/bin/bash\n\
             # autoresearch run {tag}, {what}.\n\
             # Written by the orchestrator, which reads what it leaves in this directory (docs/slurm.md).\n\
             export PATH={path}\n\
             cd {dir} || exit 1\n\
             now() {{ date +%s.%N; }}\n\
             job_start=$(now)\n",
            tag = self.tag,
            path = quote(Path::new(&self.path))?,
            dir = quote(dir)?,
        ))
    }
}

/// The script's last lines: what the orchestrator reads first, written whole or not at all.
pub(super) const DONE: &str = "{
  echo \"job=$SLURM_JOB_ID\"
  echo \"node=$(hostname)\"
  echo \"job_start=$job_start\"
  [ -n \"${train_rc-}\" ] && echo \"train_rc=$train_rc train_start=$train_start train_end=$train_end\"
  [ -n \"${eval_rc-}\" ] && echo \"eval_rc=$eval_rc eval_start=$eval_start eval_end=$eval_end\"
  echo \"end=$(now)\"
} > done.partial && mv -f done.partial done";

/// A jail's command as one line of shell: `env -i` with exactly its environment (the job's own
/// never reaches it), under `timeout -s KILL` when it has a `limit`. The GPU the node gave the job
/// (`CUDA_VISIBLE_DEVICES`, set by Slurm) replaces this machine's.
pub(super) fn render(command: &tokio::process::Command, limit: Option<Duration>) -> Result<String> {
    let command = command.as_std();
    let mut line = String::new();
    if let Some(dir) = command.get_current_dir() {
        write!(line, "cd {} && ", quote(dir)?)?;
    }
    if let Some(limit) = limit {
        write!(line, "timeout -s KILL {:.3} ", limit.as_secs_f64())?;
    }
    line.push_str("env -i");
    for (name, value) in command.get_envs() {
        if let Some(value) = value
            && name != "CUDA_VISIBLE_DEVICES"
        {
            let mut pair = name.to_os_string();
            pair.push("=");
            pair.push(value);
            write!(line, " {}", quote(Path::new(&pair))?)?;
        }
    }
    line.push_str(" ${CUDA_VISIBLE_DEVICES+\"CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"}");
    write!(line, " {}", quote(Path::new(command.get_program()))?)?;
    for arg in command.get_args() {
        write!(line, " {}", quote(Path::new(arg))?)?;
    }
    // A subshell: `cd` must not move the script, and the pipes around it apply to it whole.
    Ok(format!("( {line} )"))
}

/// One word of shell: as it is when it is plain, else in single quotes.
pub(super) fn quote(word: &Path) -> Result<String> {
    let word = word.to_str().with_context(|| {
        format!(
            "{} is not UTF-8, which a job's script needs",
            word.display()
        )
    })?;
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    Ok(if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote(Path::new("/a/b-c.d")).unwrap(), "/a/b-c.d");
        assert_eq!(quote(Path::new("a b")).unwrap(), "'a b'");
        assert_eq!(quote(Path::new("it's")).unwrap(), r"'it'\''s'");
        assert_eq!(quote(Path::new("$HOME")).unwrap(), "'$HOME'");
        assert_eq!(quote(Path::new("")).unwrap(), "''");
    }

    #[test]
    fn a_rendered_command_runs_with_exactly_its_environment() {
        let mut command = tokio::process::Command::new("/usr/bin/env");
        command
            .env_clear()
            .env("A", "x y")
            .env("B", "it's $HOME")
            .env("CUDA_VISIBLE_DEVICES", "7")
            .current_dir("/tmp");
        let line = render(&command, Some(Duration::from_secs(5))).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&line)
            .env("CUDA_VISIBLE_DEVICES", "1")
            .env("SECRET", "s")
            .output()
            .unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        let mut vars: Vec<&str> = env.lines().collect();
        vars.sort();
        assert_eq!(
            vars,
            ["A=x y", "B=it's $HOME", "CUDA_VISIBLE_DEVICES=1"],
            "{line}"
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&line)
            .env_remove("CUDA_VISIBLE_DEVICES")
            .output()
            .unwrap();
        assert!(
            !String::from_utf8(out.stdout).unwrap().contains("CUDA"),
            "{line}"
        );
    }
}
