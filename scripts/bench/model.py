"""The CPU configuration of crates/train/src/main.rs written in eager PyTorch, for the speed
comparison in cpu_speed.sh. Same model, optimizer, batch and threads; random crops of enwik8's
tokenised train split stand in for the packed loader (throughput is what is measured).

Prints one JSON line: {"tokens_per_second": ..., "steps": ..., "loss": ...}.
"""
import json, math, os, sys, time
import torch
import torch.nn.functional as F

DEPTH, WIDTH, HEAD_DIM, VOCAB, T = 2, 128, 128, 8192, 512
DEVICE_BATCH, TOTAL_BATCH, LR_SCALE = 16, 16 * 512, 0.25
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
        self.cos, self.sin = f.cos(), f.sin()
        i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
        self.short = (i - j >= 0) & (i - j < T // 2)
    def forward(self, idx, targets):
        x0 = norm(self.wte(idx)); x = x0
        for i, b in enumerate(self.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.ve[str(i)](idx) if has_ve(i) else None
            x = b(x, ve, self.cos, self.sin, self.short if window(i) < T else None)
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        return F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1))

def orthogonalize(g):
    x = g / (g.norm() * 1.02 + 1e-6)
    for a, b, c in POLAR:
        if g.size(0) > g.size(1):
            A = x.mT @ x; x = a * x + x @ (b * A + c * A @ A)
        else:
            A = x @ x.mT; x = a * x + (b * A + c * A @ A) @ x
    return x

@torch.no_grad()
def muon_step(params, state, lr, momentum, wd):
    for p in params:
        st = state.setdefault(p, {})
        rows, cols = p.shape
        buf = st.setdefault("m", torch.zeros_like(p))
        second = st.setdefault("v", torch.zeros((rows, 1) if rows >= cols else (1, cols)))
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
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    raw = open(os.path.join(os.path.dirname(__file__), "../../data/enwik8/train.tokens"), "rb").read()
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.int16).to(torch.int64) & 0xFFFF
    torch.manual_seed(42)
    model = GPT()
    scale = (WIDTH / 768) ** -0.5 * LR_SCALE
    adam = torch.optim.AdamW([
        dict(params=[model.wte.weight, *[e.weight for e in model.ve.values()]], lr=0.6 * scale),
        dict(params=[model.lm_head.weight], lr=0.004 * scale),
        dict(params=[model.resid_lambdas], lr=0.005 * LR_SCALE),
        dict(params=[model.x0_lambdas], lr=0.5 * LR_SCALE, betas=(0.96, 0.95)),
    ], betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    matrices = [p for p in model.h.parameters()]
    state, accum = {}, TOTAL_BATCH // (DEVICE_BATCH * T)
    step, counted, t_count = 0, 0, None
    while True:
        t0 = time.time()
        for _ in range(accum):
            starts = torch.randint(0, len(tokens) - T - 1, (DEVICE_BATCH,))
            rows = torch.stack([tokens[s:s + T + 1] for s in starts])
            loss = model(rows[:, :-1], rows[:, 1:])
            (loss / accum).backward()
        adam.step()
        muon_step(matrices, state, 0.04 * LR_SCALE, 0.85 + 0.1 * min(step / 300, 1), 0.2)
        model.zero_grad(set_to_none=True)
        loss_value = loss.item()
        step += 1
        if step > 11:
            counted += time.time() - t0
            if counted >= budget: break
    print(json.dumps({"tokens_per_second": (step - 11) * TOTAL_BATCH / counted, "steps": step, "loss": loss_value}))

if __name__ == "__main__":
    main()
