"""The model and optimizer of crates/train/src/main.rs written in PyTorch, for the speed
comparisons in cpu_speed.sh (CPU configuration, eager) and gpu.sh (GPU configuration with
--gpu: bf16 autocast on CUDA, eager or --compile). Same model, optimizer, batch and schedules
(Muon's momentum, the learning-rate warm-down over the last half of the budget); random crops of the tokenised train split stand in for the packed loader
(throughput is what is measured). With --export the trained forward pass is saved as float32
TorchScript, so that the protected `evaluate` binary scores it like the Rust trainer's.

Usage: model.py [BUDGET_SECONDS] [--gpu] [--compile] [--data DIR] [--export FILE] [--profile]
Prints one JSON line: {"tokens_per_second": ..., "steps": ..., "loss": ..., "mfu_percent": ...}.
"""
import argparse, json, math, os, sys, time
import torch
import torch.nn.functional as F

GPU = "--gpu" in sys.argv
HEAD_DIM, VOCAB = 128, 8192
if GPU:
    DEPTH, WIDTH, T, DEVICE_BATCH, TOTAL_BATCH, LR_SCALE = 8, 512, 2048, 64, 1 << 19, 1.0
else:
    DEPTH, WIDTH, T, DEVICE_BATCH, TOTAL_BATCH, LR_SCALE = 2, 128, 512, 16, 16 * 512, 0.25
DEVICE = "cuda" if GPU else "cpu"
GPU_PEAK_FLOPS = 989.5e12  # as runtime::MFU_PEAK_FLOPS: dense bf16 of an H100 SXM
WINDOW_PATTERN, VE_GATE, SOFTCAP = "SSSL", 32, 15.0
POLAR = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
         (4.042929935166739, -2.808917465908714, 0.5000178451051316),
         (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
         (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
         (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]

def norm(x): return F.rms_norm(x, (x.size(-1),))
def has_ve(i): return i % 2 == (DEPTH - 1) % 2
def window(i):
    short = WINDOW_PATTERN[i % len(WINDOW_PATTERN)] == "S"
    return T // 2 if short and i < DEPTH - 1 else T

class Attention(torch.nn.Module):
    def __init__(self, i):
        super().__init__()
        self.c_q, self.c_k, self.c_v, self.c_proj = (torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(4))
        self.ve_gate = torch.nn.Linear(VE_GATE, WIDTH // HEAD_DIM, bias=False) if has_ve(i) else None
    def forward(self, x, ve, cos, sin, mask):
        B, Tn, C = x.shape; H = C // HEAD_DIM
        q, k, v = (l(x).view(B, Tn, H, HEAD_DIM) for l in (self.c_q, self.c_k, self.c_v))
        if ve is not None:
            v = v + (2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE]))).unsqueeze(-1) * ve.view(B, Tn, H, HEAD_DIM)
        def rope(x):
            d = HEAD_DIM // 2; x1, x2 = x[..., :d], x[..., d:]
            return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], 3)
        q, k = norm(rope(q)).transpose(1, 2), norm(rope(k)).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=mask, is_causal=mask is None)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, Tn, C))

class Block(torch.nn.Module):
    def __init__(self, i):
        super().__init__()
        self.attn = Attention(i)
        self.c_fc = torch.nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.c_proj = torch.nn.Linear(4 * WIDTH, WIDTH, bias=False)
    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.c_proj(F.relu(self.c_fc(norm(x))).square())

class GPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = torch.nn.Embedding(VOCAB, WIDTH)
        self.ve = torch.nn.ModuleDict({str(i): torch.nn.Embedding(VOCAB, WIDTH) for i in range(DEPTH) if has_ve(i)})
        self.h = torch.nn.ModuleList(Block(i) for i in range(DEPTH))
        self.lm_head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
        self.resid_lambdas = torch.nn.Parameter(torch.ones(DEPTH))
        self.x0_lambdas = torch.nn.Parameter(torch.full((DEPTH,), 0.1))
        s = 3 ** 0.5 * WIDTH ** -0.5
        with torch.no_grad():
            torch.nn.init.normal_(self.wte.weight); torch.nn.init.normal_(self.lm_head.weight, std=0.001)
            for b in self.h:
                for l in (b.attn.c_q, b.attn.c_k, b.attn.c_v, b.c_fc): torch.nn.init.uniform_(l.weight, -s, s)
                for l in (b.attn.c_proj, b.c_proj): torch.nn.init.zeros_(l.weight)
                if b.attn.ve_gate is not None: torch.nn.init.zeros_(b.attn.ve_gate.weight)
            for e in self.ve.values(): torch.nn.init.uniform_(e.weight, -s, s)
        inv = torch.exp(torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM * -math.log(10000.0))
        f = torch.outer(torch.arange(T).float(), inv).view(1, T, 1, HEAD_DIM // 2)
        self.register_buffer("cos", f.cos(), persistent=False)
        self.register_buffer("sin", f.sin(), persistent=False)
        i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
        self.register_buffer("short", (i - j >= 0) & (i - j < T // 2), persistent=False)
    def forward(self, idx, targets):
        return F.cross_entropy(self.logits(idx).view(-1, VOCAB), targets.reshape(-1))
    def logits(self, idx):
        x0 = norm(self.wte(idx)); x = x0
        for i, b in enumerate(self.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.ve[str(i)](idx) if has_ve(i) else None
            x = b(x, ve, self.cos, self.sin, self.short if window(i) < T else None)
        logits = self.lm_head(norm(x)).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)
    def flops_per_token(self):
        embeddings = VOCAB * WIDTH * (1 + len(self.ve))
        weights = sum(p.numel() for p in self.parameters()) - embeddings
        return 6 * weights + sum(12 * WIDTH * window(i) for i in range(DEPTH))

class Logits(torch.nn.Module):
    """The forward pass the evaluator scores: token ids (1, T) to logits (1, T, VOCAB)."""
    def __init__(self, model):
        super().__init__()
        self.model = model
    def forward(self, idx):
        return self.model.logits(idx)

def orthogonalize(g):
    x = (g.bfloat16() if GPU else g)  # bf16 on CUDA, as main.rs
    x = x / (x.norm() * 1.02 + 1e-6)
    for a, b, c in POLAR:
        if g.size(0) > g.size(1):
            A = x.mT @ x; x = a * x + x @ (b * A + c * A @ A)
        else:
            A = x @ x.mT; x = a * x + (b * A + c * A @ A) @ x
    return x.float()

@torch.no_grad()
def muon_step(params, state, lr, momentum, wd):
    for p in params:
        st = state.setdefault(p, {})
        rows, cols = p.shape
        buf = st.setdefault("m", torch.zeros_like(p))
        second = st.setdefault("v", torch.zeros((rows, 1) if rows >= cols else (1, cols), device=p.device))
        buf.lerp_(p.grad, 1 - momentum)
        g = orthogonalize(p.grad.lerp(buf, momentum))
        dim, n = (1, cols) if rows >= cols else (0, rows)
        v_mean = g.square().mean(dim=dim, keepdim=True)
        v_norm = (v_mean.sum() * n).sqrt()
        second.lerp_(v_mean, 1 - 0.95)
        scale = second.clamp_min(1e-10).rsqrt()
        v_norm_new = ((v_mean * n) * scale.square()).sum().sqrt()
        g = g * scale * (v_norm / v_norm_new.clamp_min(1e-10))
        plr = lr * max(1.0, rows / cols) ** 0.5
        p.sub_(plr * g + plr * wd * p * ((g * p) >= 0))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("budget", nargs="?", type=float, default=30.0, help="counted training seconds")
    ap.add_argument("--gpu", action="store_true", help="GPU configuration, bf16 autocast on CUDA")
    ap.add_argument("--compile", action="store_true", help="train through torch.compile")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../data/enwik8"))
    ap.add_argument("--export", help="save the trained forward pass (float32 TorchScript) here")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of 3 steps")
    args = ap.parse_args()
    raw = open(os.path.join(args.data, "train.tokens"), "rb").read()
    # Steps the budget does not count, as the contract says (crates/prepare/src/contract.rs).
    uncounted = 11 if json.load(open(os.path.join(args.data, "contract.json")))["profile"] == "gpu" else 1
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.int16).to(torch.int64) & 0xFFFF
    torch.manual_seed(42)
    model = GPT().to(DEVICE)
    train_model = torch.compile(model) if args.compile else model
    scale = (WIDTH / 768) ** -0.5 * LR_SCALE
    adam = torch.optim.AdamW([
        dict(params=[model.wte.weight, *[e.weight for e in model.ve.values()]], lr=0.6 * scale),
        dict(params=[model.lm_head.weight], lr=0.004 * scale),
        dict(params=[model.resid_lambdas], lr=0.005 * LR_SCALE),
        dict(params=[model.x0_lambdas], lr=0.5 * LR_SCALE, betas=(0.96, 0.95)),
    ], betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    matrices = [p for p in model.h.parameters()]
    state, accum = {}, TOTAL_BATCH // (DEVICE_BATCH * T)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=GPU)
    for group in adam.param_groups:
        group["initial_lr"] = group["lr"]

    def train_step(step, progress):
        lrm = min(1.0, max(0.0, (1 - progress) / 0.5))
        for group in adam.param_groups:
            group["lr"] = group["initial_lr"] * lrm
        for _ in range(accum):
            starts = torch.randint(0, len(tokens) - T - 1, (DEVICE_BATCH,))
            rows = torch.stack([tokens[s:s + T + 1] for s in starts]).to(DEVICE, non_blocking=True)
            with autocast:
                loss = train_model(rows[:, :-1], rows[:, 1:])
            (loss / accum).backward()
        adam.step()
        muon_step(matrices, state, 0.04 * LR_SCALE * lrm, 0.85 + 0.1 * min(step / 300, 1), 0.2 * (1 - progress))
        model.zero_grad(set_to_none=True)
        return loss.item()  # the step's one host sync

    step, counted, first_loss = 0, 0.0, None
    while True:
        t0 = time.time()
        loss_value = train_step(step, min(counted / args.budget, 1.0))
        first_loss = first_loss if first_loss is not None else loss_value
        step += 1
        if step > uncounted:
            counted += time.time() - t0
            if counted >= args.budget: break
    if args.profile:
        activity = torch.profiler.ProfilerActivity.CUDA if GPU else torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[activity]) as prof:
            for _ in range(3):
                train_step(step, 1.0)
        sort = "cuda_time_total" if GPU else "cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=15), file=sys.stderr)
    tokens_per_second = (step - uncounted) * TOTAL_BATCH / counted
    if args.export:
        model.eval()
        example = torch.zeros((1, T), dtype=torch.int64, device=DEVICE)
        with torch.no_grad():
            torch.jit.trace(Logits(model), example).save(args.export)
    print(json.dumps({
        "tokens_per_second": tokens_per_second, "steps": step, "loss": loss_value,
        "first_loss": first_loss,
        "mfu_percent": 100 * model.flops_per_token() * tokens_per_second / GPU_PEAK_FLOPS if GPU else None,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if GPU else None,
    }))

if __name__ == "__main__":
    main()
