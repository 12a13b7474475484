//! The trainer's result line (docs/contract.md): the one JSON object a trainer prints on stdout.
//! Here, without libtorch, so that the trainer's runtime prints it and the orchestrator parses it
//! as one type.

use serde::{Deserialize, Serialize};

/// The format of [`ResultLine`]; a change that drops or renames a field counts it up.
pub const RESULT_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    pub schema: u32,
    pub status: RunStatus,
    /// Counted training time, as the runtime's clock measured it.
    pub training_seconds: f64,
    /// From the clock's start to the result line.
    pub total_seconds: f64,
    /// The CUDA caching allocator's peak on a GPU, the peak resident set on a CPU.
    pub peak_memory_mb: f64,
    pub num_steps: u64,
    pub num_params: u64,
    pub train_tokens: u64,
    /// Tokens of the counted steps per counted training second.
    pub tokens_per_second: f64,
    /// Null on a CPU.
    pub mfu_percent: Option<f64>,
    /// `cuda` or `cpu`.
    pub device: String,
    /// The hash of the evaluation contract the run trained under.
    pub contract: String,
    #[serde(default)]
    pub time_budget_s: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Fields of the trainer's own, allowed beside these.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ResultLine {
    /// A `val_bpb` the trainer printed of its own, as an extra field (the contract has none:
    /// only the protected evaluator scores); recorded beside the protected score, with a warning.
    pub fn claimed_bpb(&self) -> Option<f64> {
        self.extra
            .get("val_bpb")
            .and_then(serde_json::Value::as_f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    /// The loss went NaN or above 100: training stopped, and the trainer exits non-zero.
    Diverged,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Ok => "ok",
            RunStatus::Diverged => "diverged",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_line_parses_and_extra_fields_are_kept() {
        let line = r#"{"schema": 1, "status": "ok", "training_seconds": 300.1, "total_seconds": 325.9,
            "peak_memory_mb": 45060.2, "num_steps": 953, "num_params": 50332176,
            "train_tokens": 499646464, "tokens_per_second": 1665488.2, "mfu_percent": 39.8,
            "device": "cuda", "contract": "abc", "note": "wider"}"#;
        let parsed: ResultLine = serde_json::from_str(line).unwrap();
        assert_eq!(parsed.status, RunStatus::Ok);
        assert_eq!(parsed.extra["note"], "wider");
        let again: ResultLine =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(again, parsed);
        let missing = line.replace(r#""num_steps": 953,"#, "");
        let err = serde_json::from_str::<ResultLine>(&missing).unwrap_err();
        assert!(err.to_string().contains("num_steps"), "{err}");
    }
}
