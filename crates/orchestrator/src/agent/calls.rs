//! The tools an LLM agent calls (docs/orchestrator.md#the-agents-tools): what each does, and
//! what goes back into the conversation.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::history;
use crate::cargo_build::{Build, Builder, Rules};
use crate::config::Config;
use crate::ledger;
use crate::run_dir::RunDir;
use crate::text::one_line;
use crate::tools::Workspace;

/// What the tools act on besides the worktree.
#[derive(Clone)]
pub struct Calls {
    /// The `check` tool's build, in the sandbox, into `target_dir`.
    builder: Box<Builder>,
    target_dir: PathBuf,
    /// The run's directory, whose ledger the `history` tool reads.
    run_dir: RunDir,
    /// autoresearch.toml's `noise_sigma`, which `history` states as the decisions use it.
    noise_sigma: Option<f64>,
}

impl Calls {
    pub fn new(cfg: &Config, builder: Builder) -> Calls {
        Calls {
            builder: Box::new(builder),
            target_dir: cfg.target_dir.clone(),
            run_dir: cfg.run_dir.clone(),
            noise_sigma: cfg.settings.noise_sigma,
        }
    }

    /// The `check` tool: the build's errors, else the rule tests' failures, else "ok".
    async fn check(&self, repo: &Path) -> String {
        let checked = match self.builder.trainer(repo, &self.target_dir).await {
            Ok(Build::Built { .. }) => self.builder.rule_tests(repo, &self.target_dir).await,
            Ok(Build::Failed { diagnostics }) => return diagnostics,
            Err(e) => Err(e),
        };
        match checked {
            Ok(Rules::Hold) => "ok".into(),
            Ok(Rules::Broken(report)) => format!(
                "it builds, but breaks the trainer's rule tests (a change that breaks them is \
                 never kept):\n{}",
                report
            ),
            Err(e) => format!("error: {e:#}"),
        }
    }

    /// The `history` tool: the run so far, with the keep rule as the decisions apply it now.
    fn history(&self) -> Result<String, String> {
        let records = ledger::read_records(&self.run_dir).map_err(|e| format!("error: {e:#}"))?;
        let noise = crate::decide::noise_in_force(&records, self.noise_sigma);
        Ok(history(&records, noise))
    }

    /// Runs one tool call.
    pub async fn call(&self, call: &Value, ws: &Workspace) -> Outcome {
        let name = call["function"]["name"].as_str().unwrap_or("");
        let args = arguments(call);
        let summary_of = |reply: &str| {
            let path = args.as_ref().and_then(|a| a["path"].as_str()).unwrap_or("");
            format!("{name} {path}: {}", one_line(reply, 120))
        };
        let Some(args) = args.clone() else {
            let reply = format!("error: the arguments of `{name}` must be a JSON object");
            return Outcome::miss(summary_of(&reply), reply);
        };
        let arg = |key: &str| {
            args[key]
                .as_str()
                .ok_or_else(|| format!("error: `{name}` needs a string argument `{key}`"))
        };
        let reply = match name {
            "list_files" => ws.list_files(),
            "read_file" => arg("path").and_then(|p| ws.read_file(p)),
            "edit_file" => {
                arg("path").and_then(|p| ws.edit_file(p, arg("old_string")?, arg("new_string")?))
            }
            "write_file" => arg("path").and_then(|p| ws.write_file(p, arg("content")?)),
            "check" => Ok(self.check(ws.repo()).await),
            "history" => self.history(),
            "finish" => {
                return match arg("description") {
                    Ok(d) => Outcome {
                        finish: Some(d.lines().next().unwrap_or("").trim().to_string()),
                        ..Outcome::used(summary_of("finished"), "finished".into())
                    },
                    Err(e) => Outcome::miss(summary_of(&e), e),
                };
            }
            other => {
                let reply = format!(
                    "error: there is no tool `{other}`; use list_files, read_file, edit_file, write_file, check, history or finish"
                );
                return Outcome::miss(summary_of(&reply), reply);
            }
        };
        let read = name == "read_file" && reply.is_ok();
        let reply = reply.unwrap_or_else(|e| {
            if e.starts_with("error") {
                e
            } else {
                format!("error: {e}")
            }
        });
        Outcome {
            read,
            ..Outcome::used(summary_of(&reply), reply)
        }
    }
}

/// A call's arguments, when they are a JSON object (as a JSON string, or as the object itself).
fn arguments(call: &Value) -> Option<Value> {
    let arguments = &call["function"]["arguments"];
    arguments
        .as_str()
        .and_then(|a| serde_json::from_str(a).ok())
        .or_else(|| Some(arguments.clone()))
        .filter(Value::is_object)
}

/// One tool call's effect on the conversation.
pub struct Outcome {
    pub reply: String,
    /// The call named a tool and gave it arguments it could read (its effect may be an error).
    pub usable: bool,
    /// The description, if the call was `finish`.
    pub finish: Option<String>,
    /// A file's text, which the compacted conversation keeps until another is read.
    pub read: bool,
    /// One line for the compacted conversation.
    pub summary: String,
}

impl Outcome {
    fn used(summary: String, reply: String) -> Outcome {
        Outcome {
            reply,
            usable: true,
            finish: None,
            read: false,
            summary,
        }
    }

    fn miss(summary: String, reply: String) -> Outcome {
        Outcome {
            usable: false,
            ..Outcome::used(summary, reply)
        }
    }
}

/// The tools as the request offers them.
pub fn tool_specs() -> Value {
    let tool = |name: &str, description: &str, params: &[&str]| {
        let properties: serde_json::Map<String, Value> = params
            .iter()
            .map(|p| (p.to_string(), json!({"type": "string"})))
            .collect();
        json!({"type": "function", "function": {
            "name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": params},
        }})
    };
    json!([
        tool(
            "list_files",
            "List the repository's files; the ones you may edit are marked.",
            &[]
        ),
        tool(
            "read_file",
            "Read a file (path relative to the repository root).",
            &["path"]
        ),
        tool(
            "edit_file",
            "Replace the one exact occurrence of old_string with new_string in a file under crates/train/src/.",
            &["path", "old_string", "new_string"]
        ),
        tool(
            "write_file",
            "Create or overwrite a file under crates/train/src/.",
            &["path", "content"]
        ),
        tool(
            "check",
            "Build the trainer and run its rule tests (crates/train/rules.rs, fixed: causality, shapes, every parameter trained, the loss falls, the export loads and matches the model); returns the compiler's errors, the failing tests, or ok.",
            &[]
        ),
        tool(
            "history",
            "The run so far: the best kept experiments and the latest ones, with val_bpb, delta against the best before, and the keep rule with the noise floor.",
            &[]
        ),
        tool(
            "finish",
            "End your proposal with a one-line description of the change.",
            &["description"]
        ),
    ])
}
