#!/usr/bin/python3
# Writes the golden reference files in tests/data/golden/ that llmtune's C++ tests compare against:
# tiny random GPT-NeoX / Llama / Qwen2 / GPT-2 checkpoints in HF layout, their logits, loss and gradients,
# LoRA adapters in PEFT layout, and parameters after a few optimizer steps (docs/hf-semantics.md §1, §2, §4, §7).
#
# Run with Debian's interpreter (it has torch 1.13; no transformers/safetensors needed):
#     /usr/bin/python3 tools/make_golden.py
# Everything is deterministic (fixed seeds, one thread). Math is done in float64 on weights that were first
# rounded to float32 (exactly what the F32 files hold); results are stored as F32.

import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "golden")
F64 = torch.float64

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# ---------------------------------------------------------------------------------------------------------
# safetensors, written by hand (hf-semantics §2.4)

_ST_DTYPES = {torch.float32: ("F32", "<f4"), torch.int32: ("I32", "<i4")}
_ST_NP = {"F32": "<f4", "I32": "<i4"}


def save_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        code, np_dtype = _ST_DTYPES[t.dtype]
        data = t.numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert header.pop("__metadata__") == {"format": "pt"}
    data = raw[8 + n:]
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1]) for v in header.values())
    pos = 0
    for b, e in spans:  # contiguous, no gaps, covers the data section
        assert b == pos
        pos = e
    assert pos == len(data)
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=_ST_NP[v["dtype"]]).reshape(v["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def write_checked(path, tensors):
    """Write, read back, and require exact equality (tests the writer on every file it makes)."""
    save_safetensors(path, tensors)
    back = load_safetensors(path)
    assert set(back) == set(tensors), path
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v.detach().cpu()), (path, k)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def f32(t):
    return t.detach().to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------------------
# Random weights (rounded to F32 first so the files hold exactly what the golden math used)

def init_params(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in shapes:
        is_norm = any(s in name for s in ("layernorm", "layer_norm", "ln_", "norm.weight", "norm.bias"))
        if is_norm and name.endswith(".weight"):
            t = 1.0 + 0.15 * torch.randn(shape, generator=g)          # around 1 so the scale matters
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)                 # every bias non-zero
        elif len(shape) == 2 and ("embed" in name or name.startswith("wte") or name.startswith("wpe") or "lm_head" in name):
            t = (0.1 if name.startswith("wpe") else 0.2) * torch.randn(shape, generator=g)
        else:
            fan_in = shape[0] if ".c_attn." in name or ".c_proj." in name or ".c_fc." in name else shape[1]
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)   # std 0.07..0.2 at these sizes
        params[name] = t.to(torch.float32)
    return params


def as_f64_leaves(params, trainable=None):
    out = {}
    for k, v in params.items():
        t = v.to(F64).clone()
        t.requires_grad_(trainable is None or k in trainable)
        out[k] = t
    return out


# ---------------------------------------------------------------------------------------------------------
# Building blocks (HF semantics, hf-semantics §7)

def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_tables(inv_freq, T):
    pos = torch.arange(T, dtype=F64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, rot]
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):  # x [B,H,T,rot]
    return x * cos + rotate_half(x) * sin


def llama3_inv_freq(inv_freq, rs):
    factor, lo, hi, orig = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    lo_wavelen, hi_wavelen = orig / lo, orig / hi
    wavelen = 2 * math.pi / inv_freq
    out = torch.where(wavelen > lo_wavelen, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < hi_wavelen) & ~(wavelen > lo_wavelen)
    return torch.where(medium, smoothed, out)


def attention(q, k, v, attention_mask):
    """q [B,H,T,D], k/v [B,Hkv,T,D]; causal + key-padding mask, masked scores = most negative finite value."""
    B, H, T, D = q.shape
    rep = H // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)  # query head j uses kv head j // rep
    v = v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & attention_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def lora_branch(x, lora, module):
    if module not in lora:
        return 0.0
    A, Bm, s = lora[module]
    return (x @ A.t() @ Bm.t()) * s


def linear(x, P, name, lora, module=None):
    """nn.Linear ([out,in] weight) with an optional LoRA branch keyed by in-memory module name."""
    y = F.linear(x, P[name + ".weight"], P.get(name + ".bias"))
    return y + lora_branch(x, lora, module or name)


def conv1d(x, P, name, lora, module):
    """GPT-2 Conv1D ([in,out] weight): y = x W + b. The LoRA branch is the same x Aᵀ Bᵀ · s as for Linear."""
    y = x @ P[name + ".weight"] + P[name + ".bias"]
    return y + lora_branch(x, lora, module)


# ---------------------------------------------------------------------------------------------------------
# Architectures

def neox_forward(P, c, ids, am, lora={}):
    B, T = ids.shape
    E, H = c["hidden_size"], c["num_attention_heads"]
    D = E // H
    rot = int(D * c["rotary_pct"])
    eps = c["layer_norm_eps"]
    inv = 1.0 / (c["rotary_emb_base"] ** (torch.arange(0, rot, 2, dtype=F64) / rot))
    cos, sin = rope_tables(inv, T)
    h = P["gpt_neox.embed_in.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        a = layer_norm(h, P[p + "input_layernorm.weight"], P[p + "input_layernorm.bias"], eps)
        qkv = linear(a, P, p + "attention.query_key_value", lora)          # [B,T,3E], rows laid out [H,3,D]
        qkv = qkv.view(B, T, H, 3 * D).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        q = torch.cat((apply_rope(q[..., :rot], cos, sin), q[..., rot:]), dim=-1)
        k = torch.cat((apply_rope(k[..., :rot], cos, sin), k[..., rot:]), dim=-1)
        o = attention(q, k, v, am).permute(0, 2, 1, 3).reshape(B, T, E)
        attn_out = linear(o, P, p + "attention.dense", lora)

        def mlp(m):
            return linear(F.gelu(linear(m, P, p + "mlp.dense_h_to_4h", lora)), P, p + "mlp.dense_4h_to_h", lora)

        if c["use_parallel_residual"]:
            m = layer_norm(h, P[p + "post_attention_layernorm.weight"], P[p + "post_attention_layernorm.bias"], eps)
            h = h + attn_out + mlp(m)
        else:
            h = h + attn_out
            m = layer_norm(h, P[p + "post_attention_layernorm.weight"], P[p + "post_attention_layernorm.bias"], eps)
            h = h + mlp(m)
    h = layer_norm(h, P["gpt_neox.final_layer_norm.weight"], P["gpt_neox.final_layer_norm.bias"], eps)
    return h @ P["embed_out.weight"].t()


def neox_shapes(c):
    E, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    s = [("gpt_neox.embed_in.weight", [V, E])]
    for i in range(c["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        s += [(p + "input_layernorm.weight", [E]), (p + "input_layernorm.bias", [E]),
              (p + "post_attention_layernorm.weight", [E]), (p + "post_attention_layernorm.bias", [E]),
              (p + "attention.query_key_value.weight", [3 * E, E]), (p + "attention.query_key_value.bias", [3 * E]),
              (p + "attention.dense.weight", [E, E]), (p + "attention.dense.bias", [E]),
              (p + "mlp.dense_h_to_4h.weight", [I, E]), (p + "mlp.dense_h_to_4h.bias", [I]),
              (p + "mlp.dense_4h_to_h.weight", [E, I]), (p + "mlp.dense_4h_to_h.bias", [E])]
    s += [("gpt_neox.final_layer_norm.weight", [E]), ("gpt_neox.final_layer_norm.bias", [E]), ("embed_out.weight", [V, E])]
    return s


def llama_forward(P, c, ids, am, lora={}):
    B, T = ids.shape
    E, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or E // H
    eps = c["rms_norm_eps"]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=F64) / D))
    if c.get("rope_scaling"):
        assert c["rope_scaling"]["rope_type"] == "llama3"
        inv = llama3_inv_freq(inv, c["rope_scaling"])
    cos, sin = rope_tables(inv, T)
    h = P["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(h, P[p + "input_layernorm.weight"], eps)
        q = linear(a, P, p + "self_attn.q_proj", lora).view(B, T, H, D).transpose(1, 2)
        k = linear(a, P, p + "self_attn.k_proj", lora).view(B, T, Hkv, D).transpose(1, 2)
        v = linear(a, P, p + "self_attn.v_proj", lora).view(B, T, Hkv, D).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attention(q, k, v, am).transpose(1, 2).reshape(B, T, H * D)
        h = h + linear(o, P, p + "self_attn.o_proj", lora)
        m = rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        gate = linear(m, P, p + "mlp.gate_proj", lora)
        up = linear(m, P, p + "mlp.up_proj", lora)
        h = h + linear(F.silu(gate) * up, P, p + "mlp.down_proj", lora)
    h = rms_norm(h, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if c["tie_word_embeddings"] else P["lm_head.weight"]
    return h @ head.t()


def llama_shapes(c, qkv_bias=False):
    E, I, V, H, Hkv = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or E // H
    s = [("model.embed_tokens.weight", [V, E])]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s += [(p + "input_layernorm.weight", [E]), (p + "post_attention_layernorm.weight", [E]),
              (p + "self_attn.q_proj.weight", [H * D, E]), (p + "self_attn.k_proj.weight", [Hkv * D, E]),
              (p + "self_attn.v_proj.weight", [Hkv * D, E]), (p + "self_attn.o_proj.weight", [E, H * D]),
              (p + "mlp.gate_proj.weight", [I, E]), (p + "mlp.up_proj.weight", [I, E]), (p + "mlp.down_proj.weight", [E, I])]
        if qkv_bias:
            s += [(p + "self_attn.q_proj.bias", [H * D]), (p + "self_attn.k_proj.bias", [Hkv * D]),
                  (p + "self_attn.v_proj.bias", [Hkv * D])]
    s += [("model.norm.weight", [E])]
    if not c["tie_word_embeddings"]:
        s += [("lm_head.weight", [V, E])]
    return s


def gpt2_forward(P, c, ids, am, lora={}):
    B, T = ids.shape
    E, H = c["n_embd"], c["n_head"]
    D = E // H
    eps = c["layer_norm_epsilon"]
    h = P["wte.weight"][ids] + P["wpe.weight"][torch.arange(T)]
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        mod = "transformer." + p  # in-memory module path (what PEFT keys use)
        a = layer_norm(h, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        qkv = conv1d(a, P, p + "attn.c_attn", lora, mod + "attn.c_attn")   # contiguous q|k|v
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(E, dim=-1))
        o = attention(q, k, v, am).transpose(1, 2).reshape(B, T, E)
        h = h + conv1d(o, P, p + "attn.c_proj", lora, mod + "attn.c_proj")
        m = layer_norm(h, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        f = gelu_new(conv1d(m, P, p + "mlp.c_fc", lora, mod + "mlp.c_fc"))
        h = h + conv1d(f, P, p + "mlp.c_proj", lora, mod + "mlp.c_proj")
    h = layer_norm(h, P["ln_f.weight"], P["ln_f.bias"], eps)
    return h @ P["wte.weight"].t()


def gpt2_shapes(c):
    E, V, Np = c["n_embd"], c["vocab_size"], c["n_positions"]
    I = c["n_inner"] or 4 * E
    s = [("wte.weight", [V, E]), ("wpe.weight", [Np, E])]
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        s += [(p + "ln_1.weight", [E]), (p + "ln_1.bias", [E]), (p + "ln_2.weight", [E]), (p + "ln_2.bias", [E]),
              (p + "attn.c_attn.weight", [E, 3 * E]), (p + "attn.c_attn.bias", [3 * E]),
              (p + "attn.c_proj.weight", [E, E]), (p + "attn.c_proj.bias", [E]),
              (p + "mlp.c_fc.weight", [E, I]), (p + "mlp.c_fc.bias", [I]),
              (p + "mlp.c_proj.weight", [I, E]), (p + "mlp.c_proj.bias", [E])]
    s += [("ln_f.weight", [E]), ("ln_f.bias", [E])]
    return s


def gpt2_buffers(c):
    n = c["n_positions"]
    mask = torch.ones(n, n, dtype=torch.float32).tril().view(1, 1, n, n)
    return {f"h.{i}.attn.bias": mask.clone() for i in range(c["n_layer"])}


# ---------------------------------------------------------------------------------------------------------
# Configs (exactly the HF fields for each model_type)

def neox_config(parallel, rotary_pct):
    return {
        "architectures": ["GPTNeoXForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "classifier_dropout": 0.1, "hidden_act": "gelu",
        "hidden_dropout": 0.0, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 192,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 64, "model_type": "gpt_neox",
        "num_attention_heads": 4, "num_hidden_layers": 2, "rope_scaling": None, "rotary_emb_base": 10000,
        "rotary_pct": rotary_pct, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.0", "use_cache": True, "use_parallel_residual": parallel, "vocab_size": 128,
    }


def llama_config(tied, rope_scaling, vocab=112):
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": 160, "max_position_embeddings": 64, "mlp_bias": False,
        "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": rope_scaling,
        "rope_theta": 500000.0 if rope_scaling else 10000.0, "tie_word_embeddings": tied, "torch_dtype": "float32",
        "transformers_version": "4.46.0", "use_cache": True, "vocab_size": vocab,
    }


def qwen2_config():
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 98, "eos_token_id": 99,
        "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 64, "max_window_layers": 2, "model_type": "qwen2", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 100,
    }


def gpt2_config():
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.0,
        "bos_token_id": 95, "embd_pdrop": 0.0, "eos_token_id": 95, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_inner": None,
        "n_layer": 2, "n_positions": 64, "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "summary_activation": None,
        "summary_first_dropout": 0.0, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "torch_dtype": "float32", "transformers_version": "4.46.0", "use_cache": True,
        "vocab_size": 96,
    }


def qwen2_forward(P, c, ids, am, lora={}):
    c2 = dict(c)
    c2["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    return llama_forward(P, c2, ids, am, lora)


def model_spec(case):
    """(config, shapes, forward, buffers, seed) for a forward case."""
    if case == "neox_parallel":
        c = neox_config(True, 0.25)
        return c, neox_shapes(c), neox_forward, {}, 101
    if case == "neox_sequential":
        c = neox_config(False, 0.5)
        return c, neox_shapes(c), neox_forward, {}, 102
    if case == "llama_gqa_untied":
        c = llama_config(False, None)
        return c, llama_shapes(c), llama_forward, {}, 103
    if case == "llama_tied_llama3rope":
        c = llama_config(True, {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                "original_max_position_embeddings": 64, "rope_type": "llama3"}, vocab=104)
        return c, llama_shapes(c), llama_forward, {}, 104
    if case == "qwen2_bias":
        c = qwen2_config()
        return c, llama_shapes(c, qkv_bias=True), qwen2_forward, {}, 105
    if case == "gpt2":
        c = gpt2_config()
        return c, gpt2_shapes(c), gpt2_forward, gpt2_buffers(c), 106
    raise KeyError(case)


# ---------------------------------------------------------------------------------------------------------
# Batch and loss

def vocab_of(c):
    return c["vocab_size"]


def make_batch(c, seed, lengths=(12, 8)):
    """B=2, T=max(lengths); row b holds lengths[b] real tokens then right padding (pad id = eos id)."""
    g = torch.Generator().manual_seed(seed)
    V = vocab_of(c)
    eos = c["eos_token_id"]
    bos = c.get("bos_token_id")
    B, T = len(lengths), max(lengths)
    specials = {x for x in (eos, bos) if x is not None}
    ids = torch.randint(3, V, (B, T), generator=g)
    for s in specials:  # keep special ids out of the real text, so only padding carries the pad id
        ids[ids == s] = 3 + (s % 7)
    if c["model_type"] == "llama" and bos is not None:
        ids[:, 0] = bos
    am = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        am[b, :n] = 1
        ids[b, n:] = eos
    labels = ids.clone()
    labels[am == 0] = -100
    return ids, am, labels


def causal_lm_loss(logits, labels):
    """HF ForCausalLMLoss with num_items_in_batch=None: shift inside, CE mean over shifted labels != -100."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean")


def loss_by_hand(logits, labels):
    total, n = 0.0, 0
    B, T, _ = logits.shape
    for b in range(B):
        for t in range(T - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            total += float(torch.logsumexp(logits[b, t], 0) - logits[b, t, y])
            n += 1
    return total / n


def token_counts(labels):
    return int((labels[:, 1:] != -100).sum()), int((labels != -100).sum())


# ---------------------------------------------------------------------------------------------------------
# Self-checks on the reference implementation

def close(a, b, tol=1e-10):
    return float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max()))


def check_causal_and_padding(fwd, P, c, ids, am, lengths):
    with torch.no_grad():
        base = fwd(P, c, ids, am)
        # causality: changing a token changes only its own and later positions
        t = lengths[0] - 4
        ids2 = ids.clone()
        ids2[0, t] = (ids2[0, t] + 5 - 3) % (vocab_of(c) - 3) + 3
        out2 = fwd(P, c, ids2, am)
        assert close(out2[0, :t], base[0, :t]), "future token leaked into earlier logits"
        assert not close(out2[0, t:], base[0, t:]), "token change had no effect"
        # right padding: the short row's real positions equal the row run alone, unpadded
        n = lengths[1]
        alone = fwd(P, c, ids[1:2, :n], am[1:2, :n])
        assert close(base[1, :n], alone[0]), "padding changed real-position logits"
        # pad ids are invisible to real positions (swap pad ids for other tokens, keep the mask)
        ids3 = ids.clone()
        ids3[1, n:] = 7
        assert close(fwd(P, c, ids3, am)[1, :n], base[1, :n])
        # and the key-padding mask is really applied (pad queries see only real keys)
        am_all = torch.ones_like(am)
        assert not close(fwd(P, c, ids3, am_all)[1, n:], fwd(P, c, ids3, am)[1, n:]), "key padding mask had no effect"


def check_finite_differences(fwd, P, c, ids, am, labels, grads, seed, n=4):
    g = torch.Generator().manual_seed(seed)
    names = sorted(grads)
    h = 1e-6
    for _ in range(n):
        name = names[int(torch.randint(len(names), (1,), generator=g))]
        idx = int(torch.randint(P[name].numel(), (1,), generator=g))
        with torch.no_grad():
            flat = P[name].view(-1)
            old = float(flat[idx])
            flat[idx] = old + h
            lp = float(causal_lm_loss(fwd(P, c, ids, am), labels))
            flat[idx] = old - h
            lm = float(causal_lm_loss(fwd(P, c, ids, am), labels))
            flat[idx] = old
        fd = (lp - lm) / (2 * h)
        ag = float(grads[name].view(-1)[idx])
        assert abs(fd - ag) <= 1e-6 * (1 + abs(ag)), f"finite difference mismatch {name}[{idx}]: {fd} vs {ag}"


def check_gqa_equals_expanded_mha(P, c, ids, am):
    """GQA with Hkv kv heads must equal plain MHA whose k/v rows are the kv heads repeated per query group."""
    H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    rep = H // Hkv
    P2 = dict(P)
    for i in range(c["num_hidden_layers"]):
        for w in ("k_proj", "v_proj"):
            name = f"model.layers.{i}.self_attn.{w}.weight"
            P2[name] = P[name].view(Hkv, D, -1).repeat_interleave(rep, dim=0).reshape(H * D, -1)
    c2 = dict(c, num_key_value_heads=H)
    with torch.no_grad():
        assert close(llama_forward(P2, c2, ids, am), llama_forward(P, c, ids, am))


def check_llama3_changes_some_freqs(c):
    D = c["head_dim"]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=F64) / D))
    new = llama3_inv_freq(inv, c["rope_scaling"])
    same = (new == inv)
    divided = torch.isclose(new, inv / c["rope_scaling"]["factor"], rtol=1e-12, atol=0)
    smoothed = ~same & ~divided
    assert same.any() and divided.any() and smoothed.any(), "llama3 rope scaling should hit all three regimes"


def check_tied(fwd, P, c, ids, am, labels, grads, tied_name):
    """Gradient of a tied weight = d/dE of the loss with the embedding lookup only + with the head only."""
    def grad_with(which):
        Q = {k: v.detach().clone() for k, v in P.items()}
        W = Q[tied_name]
        frozen = W.clone()
        W.requires_grad_(True)
        # use W where `which` says, a frozen copy elsewhere: embedding = rows gathered, head = matmul
        if which == "embed":
            Q[tied_name] = W
            logits = fwd_with_head(fwd, Q, c, ids, am, tied_name, frozen)
        else:
            Q[tied_name] = frozen
            logits = fwd_with_head(fwd, Q, c, ids, am, tied_name, W)
        causal_lm_loss(logits, labels).backward()
        return W.grad
    total = grad_with("embed") + grad_with("head")
    assert close(total, grads[tied_name]), "tied gradient is not the sum of both uses"


def fwd_with_head(fwd, Q, c, ids, am, tied_name, head):
    """Run fwd with the output projection replaced by `head` (untied) and the lookup using Q[tied_name]."""
    if c["model_type"] == "gpt2":
        return _gpt2_hidden(Q, c, ids, am) @ head.t()
    Q = dict(Q)
    Q["lm_head.weight"] = head
    return fwd(Q, dict(c, tie_word_embeddings=False), ids, am)


def _gpt2_hidden(P, c, ids, am):
    """Final hidden states of gpt2_forward: append identity rows to wte, so the extra logits are ln_f(h) itself.
    (The appended rows are never looked up because every id < V.)"""
    E = c["n_embd"]
    Q = dict(P)
    V = c["vocab_size"]
    eye = torch.eye(E, dtype=F64)
    Q["wte.weight"] = torch.cat((P["wte.weight"], eye), dim=0)
    c2 = dict(c, vocab_size=V + E)
    out = gpt2_forward(Q, c2, ids, am)
    return out[..., V:]


# ---------------------------------------------------------------------------------------------------------
# Forward cases

FORWARD_CASES = ["neox_parallel", "neox_sequential", "llama_gqa_untied", "llama_tied_llama3rope", "qwen2_bias", "gpt2"]
LENGTHS = (12, 8)


def write_model_dir(d, c, params32, buffers):
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), c)
    tensors = dict(params32)
    tensors.update(buffers)
    write_checked(os.path.join(d, "model.safetensors"), tensors)


def forward_case(case):
    c, shapes, fwd, buffers, seed = model_spec(case)
    params32 = init_params(shapes, seed)
    P = as_f64_leaves(params32)
    ids, am, labels = make_batch(c, seed + 1000, LENGTHS)

    logits = fwd(P, c, ids, am)
    loss = causal_lm_loss(logits, labels)
    loss.backward()
    grads = {k: v.grad.detach() for k, v in P.items()}

    # self-checks
    assert abs(float(loss) - loss_by_hand(logits.detach(), labels)) < 1e-10
    check_causal_and_padding(fwd, P, c, ids, am, LENGTHS)
    check_finite_differences(fwd, P, c, ids, am, labels, grads, seed)
    if c["model_type"] == "llama":
        check_gqa_equals_expanded_mha(P, c, ids, am)
        if c["tie_word_embeddings"]:
            check_tied(fwd, P, c, ids, am, labels, grads, "model.embed_tokens.weight")
    if c.get("rope_scaling"):
        check_llama3_changes_some_freqs(c)
    if c["model_type"] == "gpt2":
        check_tied(fwd, P, c, ids, am, labels, grads, "wte.weight")
    assert float(logits.std()) > 0.3, f"{case}: logits too flat ({float(logits.std())})"

    d = os.path.join(OUT, case)
    write_model_dir(d, c, params32, buffers)
    n_shift, n_unshift = token_counts(labels)
    golden = {
        "input_ids": ids.to(torch.int32), "attention_mask": am.to(torch.int32), "labels": labels.to(torch.int32),
        "logits": f32(logits), "loss": f32(loss),
        "num_items_shifted": torch.tensor(n_shift, dtype=torch.int32),
        "num_items_unshifted": torch.tensor(n_unshift, dtype=torch.int32),
    }
    for k, g in grads.items():
        golden["grad." + k] = f32(g)
    write_checked(os.path.join(d, "golden.safetensors"), golden)
    print(f"{case:24s} loss {float(loss):.6f}  logits std {float(logits.std()):.3f}  params {sum(v.numel() for v in params32.values())}")
    return c, params32, buffers, fwd, ids, am, labels


# ---------------------------------------------------------------------------------------------------------
# Training helpers

def no_decay(name):
    """HF Trainer's current no-decay rule (hf-semantics §4.5): LayerNorm modules, biases, *norm* names."""
    n = name.lower()
    return ("bias" in n or "layernorm" in n or "rmsnorm" in n or re.search(r"(^|\.)norm($|\.)", n) is not None
            or re.search(r"_norm($|\.)", n) is not None)


def run_steps(loss_fn, trainable, opt, steps=3, max_grad_norm=None):
    """Each step: forward on the same batch, backward, record pre-clip norm, clip (HF rule), optimizer step."""
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        total = torch.sqrt(sum((t.grad.detach() ** 2).sum() for t in trainable.values()))
        if max_grad_norm is not None:
            coef = min(1.0, max_grad_norm / (float(total) + 1e-6))
            for t in trainable.values():
                t.grad.mul_(coef)
        opt.step()
        losses.append(float(loss))
        norms.append(float(total))
    return torch.tensor(losses, dtype=torch.float32), torch.tensor(norms, dtype=torch.float32)


ADAMW_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8}


# ---------------------------------------------------------------------------------------------------------
# LoRA cases

def lora_targets(c, modules):
    mt = c["model_type"]
    out = []
    for i in range(c.get("num_hidden_layers") or c.get("n_layer")):
        for m in modules:
            if mt == "gpt_neox":
                out.append(f"gpt_neox.layers.{i}.attention.{m}")
            elif mt in ("llama", "qwen2"):
                out.append(f"model.layers.{i}.self_attn.{m}")
            elif mt == "gpt2":
                out.append(f"transformer.h.{i}.attn.{m}")
    return out


def module_in_out(params32, c, module):
    file_name = module[len("transformer."):] if c["model_type"] == "gpt2" else module
    w = params32[file_name + ".weight"]
    if c["model_type"] == "gpt2":
        return w.shape[0], w.shape[1]  # Conv1D [in, out]
    return w.shape[1], w.shape[0]


def adapter_config(base_name, r, alpha, targets, fan_in_fan_out):
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_name, "bias": "none",
        "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "init_lora_weights": True,
        "layers_pattern": None, "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.0,
        "modules_to_save": None, "peft_type": "LORA", "peft_version": "0.13.2", "r": r, "rank_pattern": {},
        "revision": None, "target_modules": targets, "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
    }


def merged_params(P, c, lora):
    """Fold each LoRA delta into its base weight (hf-semantics §1.7); used to cross-check the LoRA forward."""
    Q = dict(P)
    for module, (A, Bm, s) in lora.items():
        delta = (Bm @ A) * s  # [out, in]
        if c["model_type"] == "gpt2":
            name = module[len("transformer."):] + ".weight"
            Q[name] = P[name] + delta.t()  # fan_in_fan_out: Conv1D weight is [in, out]
        else:
            Q[module + ".weight"] = P[module + ".weight"] + delta
    return Q


def lora_case(case, base_case, modules, r, alpha, seed):
    c, _, fwd, buffers, base_seed = model_spec(base_case)
    params32 = init_params(model_spec(base_case)[1], base_seed)
    P = as_f64_leaves(params32, trainable=set())
    ids, am, labels = make_batch(c, base_seed + 1000, LENGTHS)
    scaling = alpha / r
    g = torch.Generator().manual_seed(seed)
    adapter32 = {}
    lora = {}
    targets = lora_targets(c, modules)
    for module in targets:
        n_in, n_out = module_in_out(params32, c, module)
        A = (torch.rand(r, n_in, generator=g) * 2 - 1) / math.sqrt(n_in)   # PEFT's kaiming-uniform range
        Bm = 0.1 * torch.randn(n_out, r, generator=g)                       # non-zero so grads of A are non-zero
        ka = f"base_model.model.{module}.lora_A.weight"
        kb = f"base_model.model.{module}.lora_B.weight"
        adapter32[ka], adapter32[kb] = A.float(), Bm.float()
    Ad = {k: v.to(F64).clone().requires_grad_(True) for k, v in adapter32.items()}
    for module in targets:
        lora[module] = (Ad[f"base_model.model.{module}.lora_A.weight"], Ad[f"base_model.model.{module}.lora_B.weight"], scaling)

    logits = fwd(P, c, ids, am, lora)
    loss = causal_lm_loss(logits, labels)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in Ad.items()}

    # self-checks: LoRA forward == forward with merged weights; B=0 gives the base model
    with torch.no_grad():
        assert close(fwd(merged_params(P, c, lora), c, ids, am), logits.detach())
        zero = {m: (A, torch.zeros_like(Bm), s) for m, (A, Bm, s) in lora.items()}
        assert close(fwd(P, c, ids, am, zero), fwd(P, c, ids, am))
        assert not close(logits, fwd(P, c, ids, am))
    # finite differences on adapter entries
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(4):
        k = sorted(Ad)[int(torch.randint(len(Ad), (1,), generator=gen))]
        idx = int(torch.randint(Ad[k].numel(), (1,), generator=gen))
        with torch.no_grad():
            flat = Ad[k].view(-1)
            old = float(flat[idx])
            flat[idx] = old + 1e-6
            lp = float(causal_lm_loss(fwd(P, c, ids, am, lora), labels))
            flat[idx] = old - 1e-6
            lm = float(causal_lm_loss(fwd(P, c, ids, am, lora), labels))
            flat[idx] = old
        fd = (lp - lm) / 2e-6
        assert abs(fd - float(grads[k].view(-1)[idx])) <= 1e-6 * (1 + abs(fd)), k

    # 3 AdamW steps on A/B (all decayed), same batch, no clipping
    opt = torch.optim.AdamW(list(Ad.values()), lr=1e-2, weight_decay=0.01, **ADAMW_DEFAULTS)
    losses, norms = run_steps(lambda: causal_lm_loss(fwd(P, c, ids, am, lora), labels), Ad, opt)
    assert abs(float(losses[0]) - float(loss)) < 1e-6 and losses[2] < losses[0]

    d = os.path.join(OUT, case)
    write_model_dir(d, c, params32, buffers)
    target_names = list(modules)
    write_json(os.path.join(d, "adapter_config.json"),
               adapter_config(base_case, r, alpha, target_names, c["model_type"] == "gpt2"))
    write_checked(os.path.join(d, "adapter_model.safetensors"), adapter32)
    n_shift, n_unshift = token_counts(labels)
    golden = {
        "input_ids": ids.to(torch.int32), "attention_mask": am.to(torch.int32), "labels": labels.to(torch.int32),
        "logits": f32(logits), "loss": f32(loss), "losses": losses, "grad_norms": norms,
        "num_items_shifted": torch.tensor(n_shift, dtype=torch.int32),
        "num_items_unshifted": torch.tensor(n_unshift, dtype=torch.int32),
    }
    for k in Ad:
        golden["grad." + k] = f32(grads[k])
        golden["step3." + k] = f32(Ad[k])
    write_checked(os.path.join(d, "golden.safetensors"), golden)
    write_json(os.path.join(d, "train_config.json"), {
        "optimizer": "adamw_torch", "learning_rate": 1e-2, "adam_beta1": 0.9, "adam_beta2": 0.999,
        "adam_epsilon": 1e-8, "weight_decay": 0.01, "no_decay": [], "max_grad_norm": None, "steps": 3,
        "lr_scheduler": "constant", "lora_scaling": scaling, "trainable": sorted(Ad),
        "loss": "ForCausalLMLoss mean over shifted labels != -100 (num_items_in_batch=None)",
    })
    print(f"{case:24s} loss {float(loss):.6f}  losses {[round(float(x), 6) for x in losses]}")


# ---------------------------------------------------------------------------------------------------------
# Full / partial fine-tuning cases (NeoX, base = neox_parallel)

def neox_train_case(case, optimizer, trainable_pred):
    c, shapes, fwd, buffers, seed = model_spec("neox_parallel")
    params32 = init_params(shapes, seed)
    trainable = {k for k in params32 if trainable_pred(k)}
    P = as_f64_leaves(params32, trainable)
    ids, am, labels = make_batch(c, seed + 1000, LENGTHS)
    T = {k: P[k] for k in sorted(trainable)}
    max_grad_norm = 1.0
    if optimizer == "sgd":
        lr = 0.1
        opt = torch.optim.SGD(list(T.values()), lr=lr, momentum=0.0)
        decay_names, nodecay_names, wd = sorted(T), [], 0.0
    else:
        lr, wd = 1e-3, 0.01
        decay_names = [k for k in T if not no_decay(k)]
        nodecay_names = [k for k in T if no_decay(k)]
        opt = torch.optim.AdamW([{"params": [T[k] for k in decay_names], "weight_decay": wd},
                                 {"params": [T[k] for k in nodecay_names], "weight_decay": 0.0}],
                                lr=lr, **ADAMW_DEFAULTS)
    losses, norms = run_steps(lambda: causal_lm_loss(fwd(P, c, ids, am), labels), T, opt, max_grad_norm=max_grad_norm)
    assert losses[2] < losses[0]

    d = os.path.join(OUT, case)
    write_model_dir(d, c, params32, buffers)
    n_shift, n_unshift = token_counts(labels)
    golden = {
        "input_ids": ids.to(torch.int32), "attention_mask": am.to(torch.int32), "labels": labels.to(torch.int32),
        "losses": losses, "grad_norms": norms,
        "num_items_shifted": torch.tensor(n_shift, dtype=torch.int32),
        "num_items_unshifted": torch.tensor(n_unshift, dtype=torch.int32),
    }
    for k in T:
        golden["step3." + k] = f32(T[k])
    write_checked(os.path.join(d, "golden.safetensors"), golden)
    cfg = {"optimizer": "sgd" if optimizer == "sgd" else "adamw_torch", "learning_rate": lr, "steps": 3,
           "max_grad_norm": max_grad_norm, "lr_scheduler": "constant", "trainable": sorted(T),
           "loss": "ForCausalLMLoss mean over shifted labels != -100 (num_items_in_batch=None)"}
    if optimizer == "sgd":
        cfg.update({"momentum": 0.0, "weight_decay": 0.0})
    else:
        cfg.update({"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "weight_decay": wd,
                    "decay": sorted(decay_names), "no_decay": sorted(nodecay_names)})
    write_json(os.path.join(d, "train_config.json"), cfg)
    print(f"{case:24s} losses {[round(float(x), 6) for x in losses]}  grad_norms {[round(float(x), 4) for x in norms]}")


def main():
    os.makedirs(OUT, exist_ok=True)
    for case in FORWARD_CASES:
        forward_case(case)
    lora_case("neox_lora", "neox_parallel", ["query_key_value"], r=4, alpha=8, seed=201)
    lora_case("llama_lora", "llama_gqa_untied", ["q_proj", "v_proj"], r=4, alpha=16, seed=202)
    lora_case("gpt2_lora", "gpt2", ["c_attn"], r=4, alpha=8, seed=203)
    neox_train_case("neox_full_sgd", "sgd", lambda k: True)
    neox_train_case("neox_full_adamw", "adamw", lambda k: True)
    neox_train_case("neox_freeze", "adamw", lambda k: k.startswith("gpt_neox.layers.1.")
                    or k.startswith("gpt_neox.final_layer_norm.") or k == "embed_out.weight")
    print("all self-checks passed; wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
