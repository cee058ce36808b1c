#!/usr/bin/python3
# PyTorch reference for bench/compare: a hand-written GPT-NeoX / Llama decoder following Hugging Face
# semantics (parallel residual, partial rotary, rotate_half; RMSNorm + SwiGLU + GQA for Llama) with
# PEFT-style LoRA, trained with torch.optim.AdamW; times training steps and prints one JSON line
# {tokens_per_second, peak_rss_bytes, ...}. Run with /usr/bin/python3 (Debian torch 1.13).
#   torch_lora_reference.py --config 70m|160m|tinyllama [--full] [--bf16] [--batch 4] [--seq 256]
#                           [--steps 5] [--warmup 2] [--threads 0]
import argparse, json, math, os, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "70m": dict(arch="neox", hidden=512, layers=6, heads=8, kv_heads=8, inter=2048, vocab=50304, rotary_pct=0.25),
    "160m": dict(arch="neox", hidden=768, layers=12, heads=12, kv_heads=12, inter=3072, vocab=50304, rotary_pct=0.25),
    "tinyllama": dict(arch="llama", hidden=2048, layers=22, heads=32, kv_heads=4, inter=5632, vocab=32000, rotary_pct=1.0),
}


class LoraLinear(nn.Module):
    """PEFT lora.Linear: y = base(x) + B(A(dropout(x))) * alpha / r, base frozen."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        E, H, Hkv, I = c["hidden"], c["heads"], c["kv_heads"], c["inter"]
        self.D = E // H
        neox = c["arch"] == "neox"
        if neox:
            self.ln1, self.ln2 = nn.LayerNorm(E, eps=1e-5), nn.LayerNorm(E, eps=1e-5)
            self.query_key_value = nn.Linear(E, 3 * E)
            self.dense = nn.Linear(E, E)
            self.fc_in, self.fc_out = nn.Linear(E, I), nn.Linear(I, E)
        else:
            self.ln1, self.ln2 = RMSNorm(E), RMSNorm(E)
            self.q_proj = nn.Linear(E, H * self.D, bias=False)
            self.k_proj = nn.Linear(E, Hkv * self.D, bias=False)
            self.v_proj = nn.Linear(E, Hkv * self.D, bias=False)
            self.o_proj = nn.Linear(H * self.D, E, bias=False)
            self.gate_proj = nn.Linear(E, I, bias=False)
            self.up_proj = nn.Linear(E, I, bias=False)
            self.down_proj = nn.Linear(I, E, bias=False)

    def attention(self, x, cos, sin, mask):
        c, D = self.c, self.D
        B, T, _ = x.shape
        H, Hkv = c["heads"], c["kv_heads"]
        if c["arch"] == "neox":
            qkv = self.query_key_value(x).view(B, T, H, 3 * D)  # HF: per head [q|k|v]
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        else:
            q = self.q_proj(x).view(B, T, H, D)
            k = self.k_proj(x).view(B, T, Hkv, D)
            v = self.v_proj(x).view(B, T, Hkv, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        rd = cos.shape[-1]
        qr, qp = q[..., :rd], q[..., rd:]
        kr, kp = k[..., :rd], k[..., rd:]
        q = torch.cat((qr * cos + rotate_half(qr) * sin, qp), dim=-1)
        k = torch.cat((kr * cos + rotate_half(kr) * sin, kp), dim=-1)
        if Hkv != H:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        p = torch.softmax(s.float() + mask, dim=-1).to(v.dtype)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, H * D)
        return self.dense(o) if c["arch"] == "neox" else self.o_proj(o)

    def forward(self, x, cos, sin, mask):
        if self.c["arch"] == "neox":  # parallel residual
            a = self.attention(self.ln1(x), cos, sin, mask)
            m = self.fc_out(F.gelu(self.fc_in(self.ln2(x))))
            return x + a + m
        x = x + self.attention(self.ln1(x), cos, sin, mask)
        h = self.ln2(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        E = c["hidden"]
        self.embed = nn.Embedding(c["vocab"], E)
        self.layers = nn.ModuleList([Block(c) for _ in range(c["layers"])])
        self.final_norm = nn.LayerNorm(E, eps=1e-5) if c["arch"] == "neox" else RMSNorm(E)
        self.lm_head = nn.Linear(E, c["vocab"], bias=False)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, std=0.02)
                if getattr(mod, "bias", None) is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, ids, labels):
        c = self.c
        B, T = ids.shape
        D = c["hidden"] // c["heads"]
        rd = int(D * c["rotary_pct"])
        inv = 1.0 / (10000 ** (torch.arange(0, rd, 2).float() / rd))
        f = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed(ids)
        for blk in self.layers:
            x = blk(x, cos, sin, mask)
        logits = self.lm_head(self.final_norm(x))
        return F.cross_entropy(logits[:, :-1].reshape(-1, c["vocab"]).float(), labels[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="70m", choices=sorted(CONFIGS))
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16), as HF bf16=True")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    # threads = cores (torch 1.13 may start with 1 when OMP_NUM_THREADS is unset in some builds)
    torch.set_num_threads(a.threads if a.threads > 0 else len(os.sched_getaffinity(0)))
    torch.manual_seed(1234)
    c = CONFIGS[a.config]
    m = Model(c)
    if not a.full:
        targets = ["query_key_value"] if c["arch"] == "neox" else ["q_proj", "v_proj"]
        for p in m.parameters():
            p.requires_grad_(False)
        for blk in m.layers:
            for t in targets:
                setattr(blk, t, LoraLinear(getattr(blk, t), 16, 32))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, c["vocab"], (a.batch, a.seq), generator=g)
    times, loss = [], float("nan")
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            l = m(ids, ids)
        l.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        loss = float(l)
        if s >= a.warmup:
            times.append(dt)
    times_sorted = sorted(times)
    h = len(times_sorted) // 2
    med = times_sorted[h] if len(times_sorted) % 2 else 0.5 * (times_sorted[h - 1] + times_sorted[h])
    print(json.dumps(dict(impl="pytorch", config=a.config, mode="full" if a.full else "lora",
                          precision="bf16" if a.bf16 else "fp32", batch=a.batch, seq=a.seq,
                          threads=torch.get_num_threads(), torch=torch.__version__, step_seconds=times,
                          tokens_per_second=a.batch * a.seq / med,
                          peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          trainable_params=sum(p.numel() for p in params), final_loss=loss)))


if __name__ == "__main__":
    main()
