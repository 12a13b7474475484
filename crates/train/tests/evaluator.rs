//! The protected evaluator against models built to fool it, on `prepare`'s tiny dataset.
//!
//! - `causal_exports_are_scored_and_peeking_ones_refused_in_any_precision`: a causal model and one
//!   that adds the next token's embedding, each in float32 and bfloat16: the causal ones are
//!   scored with a probe difference of exactly 0 by a locked-down evaluator, the peeking ones get
//!   no score.
//! - `a_peek_that_spares_fixed_positions_is_caught`: the model peeks everywhere except at the
//!   positions an evaluator with fixed cut points would probe.
//! - `a_peek_at_two_of_sixty_four_positions_is_caught`: every row is probed, at 342 cuts at least.
//! - `models_that_read_print_draw_or_keep_state_are_refused`: scripted in TorchScript, a model
//!   that reads the validation tokens or `/proc/self/environ` (`torch.from_file`), prints, draws
//!   random numbers or counts its calls is not run, and its verdict names the operation.
//! - `code_run_while_loading_reads_no_file_and_prints_nowhere`: a model whose `__setstate__`
//!   (run by TorchScript at load time) prints a perfect score and reads the validation tokens:
//!   the read fails, the evaluator says so, and nothing of the model reaches stdout.
//!
//! The scripted models come from the Python whose torch the build links (`.libtorch`).

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json_line, output_ok};
use tch::{CModule, Device, Kind, Tensor, nn};

struct Fixture {
    dir: tempfile::TempDir,
    data: PathBuf,
    vocab: i64,
    seq_len: i64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures::tiny_dataset(dir.path()).unwrap();
    let contract = prepare::Dataset::open(&data).unwrap().contract().clone();
    Fixture {
        dir,
        data,
        vocab: contract.vocab_size as i64,
        seq_len: contract.seq_len as i64,
    }
}

/// The evaluator's JSON verdict on `model`, read from its stdout.
fn evaluate(f: &Fixture, model: &Path) -> serde_json::Value {
    json_line(&output_ok(
        Command::new(env!("CARGO_BIN_EXE_evaluate"))
            .arg(model)
            .arg("val")
            .env(prepare::DATA_ENV, &f.data),
    ))
}

fn assert_refused(verdict: &serde_json::Value) {
    assert_eq!(verdict["causal"], false, "{verdict}");
    assert!(verdict["bpb"].is_null(), "{verdict}");
    assert!(
        verdict["probe_max_diff"].as_f64().unwrap() > 0.01,
        "{verdict}"
    );
}

/// A tiny language model computing in `kind`: a running mean of token embeddings (causal), plus,
/// where `peek_at` is 1, the next token's embedding.
fn export_traced(f: &Fixture, name: &str, kind: Kind, peek_at: Option<&Tensor>) -> PathBuf {
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let wte = nn::embedding(vs.root() / "wte", f.vocab, 16, Default::default());
    let head = nn::linear(vs.root() / "head", 16, f.vocab, Default::default());
    vs.set_kind(kind);
    vs.freeze();
    let positions = Tensor::arange_start(1, f.seq_len + 1, (kind, Device::Cpu)).view([1, -1, 1]);
    let example = Tensor::zeros([1, f.seq_len], (Kind::Int64, Device::Cpu));
    let module = CModule::create_by_tracing("Tiny", "forward", &[example], &mut |x| {
        let e = x[0].apply(&wte); // (1, T, 16)
        let h = e.cumsum(1, kind) / &positions;
        let h = match peek_at {
            Some(mask) => h + e.roll([-1], [1]) * mask.to_kind(kind).view([1, -1, 1]),
            None => h,
        };
        vec![h.apply(&head).to_kind(Kind::Float)]
    })
    .unwrap();
    let path = f.dir.path().join(format!("{name}.pt"));
    module.save(&path).unwrap();
    path
}

#[test]
fn causal_exports_are_scored_and_peeking_ones_refused_in_any_precision() {
    let f = fixture();
    let everywhere = Tensor::ones([f.seq_len], (Kind::Float, Device::Cpu));
    for kind in [Kind::Float, Kind::BFloat16] {
        let causal = evaluate(&f, &export_traced(&f, "causal", kind, None));
        assert_eq!(causal["causal"], true, "{kind:?}: {causal}");
        assert_eq!(causal["probe_max_diff"], 0.0, "{causal}");
        assert_eq!(causal["refused"], serde_json::Value::Null, "{causal}");
        assert!(causal["probes"].as_u64().unwrap() >= 342, "{causal}");
        let confinement = causal["confinement"].as_str().unwrap();
        assert!(confinement.ends_with("+ seccomp"), "{causal}");
        let bpb = causal["bpb"].as_f64().unwrap();
        assert!(bpb > 0.0 && bpb < 20.0, "{causal}");
        assert_refused(&evaluate(
            &f,
            &export_traced(&f, "peek", kind, Some(&everywhere)),
        ));
    }
}

#[test]
fn a_peek_that_spares_fixed_positions_is_caught() {
    let f = fixture();
    let t = f.seq_len;
    let spared: Vec<i64> = [0.125, 0.25, 0.5, 0.75]
        .iter()
        .map(|c| (c * t as f64) as i64)
        .collect();
    let mask: Vec<f32> = (0..t)
        .map(|i| if spared.contains(&i) { 0.0 } else { 1.0 })
        .collect();
    let model = export_traced(&f, "spares", Kind::Float, Some(&Tensor::from_slice(&mask)));
    // The probe draws its cuts anew each call: every call must catch it.
    for _ in 0..3 {
        assert_refused(&evaluate(&f, &model));
    }
}

#[test]
fn a_peek_at_two_of_sixty_four_positions_is_caught() {
    let f = fixture();
    let mask: Vec<f32> = (0..f.seq_len)
        .map(|i| if i == 17 || i == 42 { 1.0 } else { 0.0 })
        .collect();
    let model = export_traced(&f, "rare", Kind::Float, Some(&Tensor::from_slice(&mask)));
    // A probe catches it when its cut falls on 17 or 42: 2 of 63 cuts, so 342 probes or more
    // miss it with probability below 2e-5.
    for _ in 0..3 {
        assert_refused(&evaluate(&f, &model));
    }
}

/// Saves the TorchScript model that `program` (Python defining `M`, a `torch.nn.Module`) scripts.
fn export_scripted(f: &Fixture, name: &str, program: &str) -> PathBuf {
    let path = f.dir.path().join(format!("{name}.pt"));
    let program = format!(
        "import torch\nfrom typing import Tuple\n{program}\ntorch.jit.script(M()).save({path:?})\n",
        path = path.to_str().unwrap()
    );
    // From a file: TorchScript reads the class's source back.
    let script = f.dir.path().join(format!("{name}.py"));
    std::fs::write(&script, program).unwrap();
    output_ok(Command::new(fixtures::torch_python()).arg(&script));
    path
}

/// A running mean of token embeddings that runs `extra` (Python, indented for `forward`'s body)
/// on every call.
fn export_doing(f: &Fixture, name: &str, extra: &str) -> PathBuf {
    let program = format!(
        r#"class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte = torch.nn.Embedding({vocab}, 16)
        self.head = torch.nn.Linear(16, {vocab})
        self.calls = 0
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        e = self.wte(idx)
        h = e.cumsum(1) / torch.arange(1, idx.size(1) + 1).view(1, -1, 1)
{extra}
        return self.head(h)
"#,
        vocab = f.vocab,
    );
    export_scripted(f, name, &program)
}

#[test]
fn models_that_read_print_draw_or_keep_state_are_refused() {
    let f = fixture();
    let val = f.data.join("val.tokens");
    let reads_val = format!(
        "        t = torch.from_file({val:?}, size=idx.size(1) * 4, dtype=torch.int16)\n        \
         h = h + self.wte(t.long()[1:idx.size(1) + 1].view(1, -1))"
    );
    let cases = [
        ("reads-val", reads_val.as_str(), "aten::from_file"),
        (
            "reads-environ",
            "        h = h + torch.from_file('/proc/self/environ', size=1, dtype=torch.uint8).float()",
            "aten::from_file",
        ),
        ("prints", "        print('{\"bpb\": 0.001}')", "prim::Print"),
        (
            "draws",
            "        h = h + 0.0 * torch.rand_like(h)",
            "aten::rand_like",
        ),
        ("counts", "        self.calls += 1", "prim::SetAttr"),
    ];
    for (name, extra, op) in cases {
        let verdict = evaluate(&f, &export_doing(&f, name, extra));
        assert_eq!(verdict["refused"], op, "{name}: {verdict}");
        assert!(verdict["bpb"].is_null(), "{name}: {verdict}");
    }
}

#[test]
fn code_run_while_loading_reads_no_file_and_prints_nowhere() {
    let f = fixture();
    let fake = r#"{"split": "val", "bpb": 0.001, "causal": true, "probe_max_diff": 0.0}"#;
    let program = format!(
        r#"class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.zeros(16, {vocab})
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(idx.size(0), idx.size(1), 16) @ self.w
    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        print('{fake}')
        self.w = state[0]
        self.training = state[1]
        self.w = self.w + torch.from_file({val:?}, size=2, dtype=torch.int16).float().sum()
"#,
        vocab = f.vocab,
        val = f.data.join("val.tokens"),
    );
    let model = export_scripted(&f, "loads", &program);
    // The result travels through a pipe on descriptor 3, as the orchestrator passes it.
    let (reader, writer) = pipe();
    let writer_fd = writer.as_raw_fd();
    let mut command = Command::new(env!("CARGO_BIN_EXE_evaluate"));
    command
        .arg(&model)
        .args(["val", "--result-fd", "3"])
        .env(prepare::DATA_ENV, &f.data);
    // SAFETY: dup2 is async-signal-safe; the child gets the pipe's write end as descriptor 3.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(writer_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    drop(writer);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("bpb"), "the model printed: {stdout}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let mut result = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut result)
        .unwrap();
    assert_eq!(result, "", "no verdict for a model that did not load");
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors, which are then owned here; O_CLOEXEC keeps them out of
    // children except where dup2 places one on purpose.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}
