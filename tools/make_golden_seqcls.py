#!/usr/bin/python3
# Writes the sequence-classification / reward-model goldens in tests/data/golden/*_seqcls*, llama_reward:
# tiny random *ForSequenceClassification checkpoints (Llama, GPT-NeoX, GPT-2) in HF layout, right- and
# left-padded batches, pooled logits, CE / MSE / Bradley–Terry losses and the gradient of every parameter
# (docs/hf-semantics.md §7.6, §5.5). Documented in tests/data/golden/README.md ("Sequence classification").
#
# Run with Debian's interpreter (torch 1.13):   /usr/bin/python3 tools/make_golden_seqcls.py
# It reuses tools/make_golden.py (configs, parameter shapes/init, building blocks, safetensors writer) and
# adds hidden-state forwards that take per-row position ids (left padding). Math in float64 on F32 weights.

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402

F64 = torch.float64
OUT = mg.OUT


# ---------------------------------------------------------------------------------------------------------
# Final hidden states (what Workspace::h_final holds) with explicit position ids [B, T]

def rope_at(inv_freq, pos):
    """cos/sin [B, 1, T, rot] for per-row positions (HF: freqs = pos ⊗ inv_freq, emb = cat(freqs, freqs))."""
    freqs = pos.to(F64)[..., None] * inv_freq          # [B, T, rot/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]   # [B, 1, T, rot]
    return emb.cos(), emb.sin()


def llama_hidden(P, c, ids, am, pos):
    B, T = ids.shape
    E, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or E // H
    eps = c["rms_norm_eps"]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, dtype=F64) / D))
    assert not c.get("rope_scaling")
    cos, sin = rope_at(inv, pos)
    h = P["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = mg.rms_norm(h, P[p + "input_layernorm.weight"], eps)
        q = mg.linear(a, P, p + "self_attn.q_proj", {}).view(B, T, H, D).transpose(1, 2)
        k = mg.linear(a, P, p + "self_attn.k_proj", {}).view(B, T, Hkv, D).transpose(1, 2)
        v = mg.linear(a, P, p + "self_attn.v_proj", {}).view(B, T, Hkv, D).transpose(1, 2)
        q, k = mg.apply_rope(q, cos, sin), mg.apply_rope(k, cos, sin)
        o = mg.attention(q, k, v, am).transpose(1, 2).reshape(B, T, H * D)
        h = h + mg.linear(o, P, p + "self_attn.o_proj", {})
        m = mg.rms_norm(h, P[p + "post_attention_layernorm.weight"], eps)
        gate = mg.linear(m, P, p + "mlp.gate_proj", {})
        up = mg.linear(m, P, p + "mlp.up_proj", {})
        h = h + mg.linear(F.silu(gate) * up, P, p + "mlp.down_proj", {})
    return mg.rms_norm(h, P["model.norm.weight"], eps)


def neox_hidden(P, c, ids, am, pos):
    B, T = ids.shape
    E, H = c["hidden_size"], c["num_attention_heads"]
    D = E // H
    rot = int(D * c["rotary_pct"])
    eps = c["layer_norm_eps"]
    inv = 1.0 / (c["rotary_emb_base"] ** (torch.arange(0, rot, 2, dtype=F64) / rot))
    cos, sin = rope_at(inv, pos)
    h = P["gpt_neox.embed_in.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        a = mg.layer_norm(h, P[p + "input_layernorm.weight"], P[p + "input_layernorm.bias"], eps)
        qkv = mg.linear(a, P, p + "attention.query_key_value", {}).view(B, T, H, 3 * D).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        q = torch.cat((mg.apply_rope(q[..., :rot], cos, sin), q[..., rot:]), dim=-1)
        k = torch.cat((mg.apply_rope(k[..., :rot], cos, sin), k[..., rot:]), dim=-1)
        o = mg.attention(q, k, v, am).permute(0, 2, 1, 3).reshape(B, T, E)
        attn_out = mg.linear(o, P, p + "attention.dense", {})

        def mlp(m):
            return mg.linear(F.gelu(mg.linear(m, P, p + "mlp.dense_h_to_4h", {})), P, p + "mlp.dense_4h_to_h", {})

        ln2w, ln2b = P[p + "post_attention_layernorm.weight"], P[p + "post_attention_layernorm.bias"]
        if c["use_parallel_residual"]:
            h = h + attn_out + mlp(mg.layer_norm(h, ln2w, ln2b, eps))
        else:
            h = h + attn_out
            h = h + mlp(mg.layer_norm(h, ln2w, ln2b, eps))
    return mg.layer_norm(h, P["gpt_neox.final_layer_norm.weight"], P["gpt_neox.final_layer_norm.bias"], eps)


def gpt2_hidden(P, c, ids, am, pos):
    B, T = ids.shape
    E, H = c["n_embd"], c["n_head"]
    D = E // H
    eps = c["layer_norm_epsilon"]
    h = P["wte.weight"][ids] + P["wpe.weight"][pos]
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        a = mg.layer_norm(h, P[p + "ln_1.weight"], P[p + "ln_1.bias"], eps)
        qkv = mg.conv1d(a, P, p + "attn.c_attn", {}, None)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(E, dim=-1))
        o = mg.attention(q, k, v, am).transpose(1, 2).reshape(B, T, E)
        h = h + mg.conv1d(o, P, p + "attn.c_proj", {}, None)
        m = mg.layer_norm(h, P[p + "ln_2.weight"], P[p + "ln_2.bias"], eps)
        h = h + mg.conv1d(mg.gelu_new(mg.conv1d(m, P, p + "mlp.c_fc", {}, None)), P, p + "mlp.c_proj", {}, None)
    return mg.layer_norm(h, P["ln_f.weight"], P["ln_f.bias"], eps)


# ---------------------------------------------------------------------------------------------------------
# Models: base config/shapes from make_golden minus the LM head, plus score.weight [num_labels, E]

def seqcls_config(base, arch, labels, pad_token_id, problem_type=None):
    c = dict(base)
    c["architectures"] = [arch]
    c["id2label"] = {str(i): n for i, n in enumerate(labels)}
    c["label2id"] = {n: i for i, n in enumerate(labels)}
    c["pad_token_id"] = pad_token_id
    if problem_type:
        c["problem_type"] = problem_type
    return c


def model_spec(name):
    """(config, shapes, hidden fn, mg forward fn, LM-head name for the self-check, file prefix, seed)."""
    if name == "llama_seqcls":
        c = seqcls_config(mg.llama_config(False, None), "LlamaForSequenceClassification",
                          ["negative", "neutral", "positive"], 0, "single_label_classification")
        return c, mg.llama_shapes(c), llama_hidden, mg.llama_forward, "lm_head.weight", "", 301
    if name == "neox_seqcls_padeos":
        c = seqcls_config(mg.neox_config(True, 0.25), "GPTNeoXForSequenceClassification", ["a", "b", "c"], 0)
        return c, mg.neox_shapes(c), neox_hidden, mg.neox_forward, "embed_out.weight", "", 302
    if name == "gpt2_seqcls":
        c = seqcls_config(mg.gpt2_config(), "GPT2ForSequenceClassification", ["LABEL_0", "LABEL_1", "LABEL_2"], 95)
        return c, mg.gpt2_shapes(c), gpt2_hidden, mg.gpt2_forward, "wte.weight", "transformer.", 303
    if name == "llama_reward":
        c = seqcls_config(mg.llama_config(False, None), "LlamaForSequenceClassification", ["LABEL_0"], 0)
        return c, mg.llama_shapes(c), llama_hidden, mg.llama_forward, "lm_head.weight", "", 304
    raise KeyError(name)


def file_name(prefix, name):
    return name if name == "score.weight" else prefix + name


# ---------------------------------------------------------------------------------------------------------
# Batches

def make_texts(c, seed, lengths, append_eos=False, inner_eos_row=None):
    """Token lists: ids from [3, V) without special ids; Llama rows start with bos; optional appended EOS
    (counted in the length) and a real EOS inside one row."""
    g = torch.Generator().manual_seed(seed)
    V, eos, bos = c["vocab_size"], c["eos_token_id"], c.get("bos_token_id")
    specials = {x for x in (eos, bos, c["pad_token_id"]) if x is not None}
    texts = []
    for n in lengths:
        t = torch.randint(3, V, (n,), generator=g)
        for s in specials:
            t[t == s] = 3 + (s % 7)
        if c["model_type"] == "llama":
            t[0] = bos
        if append_eos:
            t[-1] = eos
        texts.append(t)
    if inner_eos_row is not None:
        texts[inner_eos_row][4] = eos
    return texts


def pad_batch(texts, pad_id, left):
    """ids, attention_mask, position_ids. Right padding: positions arange(T) (HF default). Left padding:
    cumsum(mask) − 1 with pads set to 1, as HF generation prepares them."""
    B, T = len(texts), max(len(t) for t in texts)
    ids = torch.full((B, T), pad_id, dtype=torch.int64)
    am = torch.zeros(B, T, dtype=torch.int64)
    for b, t in enumerate(texts):
        n = len(t)
        if left:
            ids[b, T - n:], am[b, T - n:] = t, 1
        else:
            ids[b, :n], am[b, :n] = t, 1
    if left:
        pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    else:
        pos = torch.arange(T).expand(B, T).clone()
    return ids, am, pos


def our_pooled(am):
    """Index of each row's last real token (what llmtune pools)."""
    T = am.shape[1]
    return (torch.arange(T) * am).argmax(-1)


def hf_pooled(ids, pad_id):
    """transformers' rule: rightmost token != pad_token_id (argmax of arange·(ids != pad))."""
    T = ids.shape[1]
    return (torch.arange(T) * (ids != pad_id).long()).argmax(-1)


# ---------------------------------------------------------------------------------------------------------
# Losses (HF *ForSequenceClassification / TRL RewardTrainer)

def ce_loss(logits, labels):
    return F.cross_entropy(logits, labels)                      # single_label_classification, mean


def mse_loss(logits, targets):
    return F.mse_loss(logits.squeeze(-1), targets)               # regression (num_labels 1), mean


def bt_loss(logits, P):
    r = logits.squeeze(-1)
    return -F.logsigmoid(r[:P] - r[P:]).mean()                   # rows 0..P-1 chosen, P..2P-1 rejected


# ---------------------------------------------------------------------------------------------------------

def run_batch(hidden, P, c, ids, am, pos, loss_fn, target):
    h = hidden(P, c, ids, am, pos)
    logits_all = h @ P["score.weight"].t()                       # HF scores every position, then gathers
    idx = our_pooled(am)
    logits = logits_all[torch.arange(ids.shape[0]), idx]
    return logits, loss_fn(logits, target), logits_all


def check_hidden_matches_make_golden(name, hidden, fwd, P, c, head_name):
    """With arange positions and an LM head, our hidden-state forward reproduces make_golden's forward."""
    texts = make_texts(c, 7, (12, 8))
    ids, am, pos = pad_batch(texts, c["pad_token_id"], left=False)
    Q = dict(P)
    if head_name not in Q:
        g = torch.Generator().manual_seed(9)
        Q[head_name] = 0.2 * torch.randn(c["vocab_size"], c.get("hidden_size", c.get("n_embd")), generator=g, dtype=F64)
    with torch.no_grad():
        ref = fwd(Q, c, ids, am)
        ours = hidden(Q, c, ids, am, pos) @ Q[head_name].t()
    m = am.bool()
    assert mg.close(ours[m], ref[m]), f"{name}: hidden-state forward differs from make_golden's forward"


def check_left_equals_alone(name, hidden, P, c, texts):
    """A left-padded row's real positions equal the row run alone (positions 0..n-1), so the positions and
    masking of the left-padded batch are right."""
    ids, am, pos = pad_batch(texts, c["pad_token_id"], left=True)
    with torch.no_grad():
        full = hidden(P, c, ids, am, pos)
        for b, t in enumerate(texts):
            n = len(t)
            alone = hidden(P, c, t[None], torch.ones(1, n, dtype=torch.int64), torch.arange(n)[None])
            assert mg.close(full[b, -n:], alone[0]), f"{name}: left padding changed row {b}"


def check_fd(name, hidden, P, c, ids, am, pos, loss_fn, target, grads, seed, n=4):
    g = torch.Generator().manual_seed(seed)
    names = sorted(grads)
    names = ["score.weight"] + [names[int(torch.randint(len(names), (1,), generator=g))] for _ in range(n - 1)]
    h = 1e-6
    for pname in names:
        idx = int(torch.randint(P[pname].numel(), (1,), generator=g))
        with torch.no_grad():
            flat = P[pname].view(-1)
            old = float(flat[idx])
            flat[idx] = old + h
            lp = float(run_batch(hidden, P, c, ids, am, pos, loss_fn, target)[1])
            flat[idx] = old - h
            lm = float(run_batch(hidden, P, c, ids, am, pos, loss_fn, target)[1])
            flat[idx] = old
        fd = (lp - lm) / (2 * h)
        ag = float(grads[pname].view(-1)[idx])
        assert abs(fd - ag) <= 1e-6 * (1 + abs(ag)), f"{name}: finite difference {pname}[{idx}] {fd} vs {ag}"


def batch_outputs(tag, name, hidden, P, c, ids, am, pos, loss_fn, target, prefix, seed):
    for p in P.values():
        p.grad = None
    logits, loss, logits_all = run_batch(hidden, P, c, ids, am, pos, loss_fn, target)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in P.items()}
    check_fd(f"{name}/{tag}", hidden, P, c, ids, am, pos, loss_fn, target, grads, seed)
    hp = hf_pooled(ids, c["pad_token_id"])
    out = {
        f"{tag}.input_ids": ids.to(torch.int32), f"{tag}.attention_mask": am.to(torch.int32),
        f"{tag}.positions": pos.to(torch.int32), f"{tag}.pooled": our_pooled(am).to(torch.int32),
        f"{tag}.hf_pooled": hp.to(torch.int32), f"{tag}.logits": mg.f32(logits),
        f"{tag}.hf_logits": mg.f32(logits_all[torch.arange(ids.shape[0]), hp]), f"{tag}.loss": mg.f32(loss),
    }
    if target is not None:  # CE class ids (I32) / MSE targets (F32); Bradley–Terry has none
        out[f"{tag}.labels"] = target.to(torch.int32) if target.dtype == torch.int64 else mg.f32(target)
    for k, g in grads.items():
        out[f"{tag}.grad.{file_name(prefix, k)}"] = mg.f32(g)
    return out, logits, loss


def write_case(name, batches):
    """batches: list of (tag, texts, left, loss_fn, target)."""
    c, shapes, hidden, fwd, head_name, prefix, seed = model_spec(name)
    E = c.get("hidden_size", c.get("n_embd"))
    shapes = [(n, s) for n, s in shapes if n not in ("lm_head.weight", "embed_out.weight")]
    shapes.append(("score.weight", [len(c["id2label"]), E]))
    params32 = mg.init_params(shapes, seed)
    P = mg.as_f64_leaves(params32)
    check_hidden_matches_make_golden(name, hidden, fwd, {k: v.detach() for k, v in P.items()}, c, head_name)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    mg.write_json(os.path.join(d, "config.json"), c)
    mg.write_checked(os.path.join(d, "model.safetensors"), {file_name(prefix, k): v for k, v in params32.items()})
    golden, results = {}, {}
    for i, (tag, texts, left, loss_fn, target) in enumerate(batches):
        if left:
            check_left_equals_alone(name, hidden, {k: v.detach() for k, v in P.items()}, c, texts)
        ids, am, pos = pad_batch(texts, c["pad_token_id"], left)
        out, logits, loss = batch_outputs(tag, name, hidden, P, c, ids, am, pos, loss_fn, target, prefix, seed + i)
        golden.update(out)
        results[tag] = (logits.detach(), float(loss), ids, am)
    mg.write_checked(os.path.join(d, "golden.safetensors"), golden)
    return c, results


def main():
    os.makedirs(OUT, exist_ok=True)
    labels3 = torch.tensor([2, 0, 1])

    # Llama, pad 0 != eos 2: HF and llmtune pool at the same position for both paddings.
    c = model_spec("llama_seqcls")[0]
    texts = make_texts(c, 11, (12, 8, 5))
    c, r = write_case("llama_seqcls", [("right", texts, False, ce_loss, labels3), ("left", texts, True, ce_loss, labels3)])
    for tag in ("right", "left"):
        _, _, ids, am = r[tag]
        assert torch.equal(our_pooled(am), hf_pooled(ids, c["pad_token_id"])), "llama_seqcls: HF pooling should agree"
    assert mg.close(r["left"][0], r["right"][0]), "left and right padding must give the same logits"
    print(f"llama_seqcls        CE right {r['right'][1]:.6f} left {r['left'][1]:.6f}")

    # GPT-NeoX, pad = eos = 0, every text ends with an appended EOS, row 0 also has a real EOS at t = 4.
    c = model_spec("neox_seqcls_padeos")[0]
    texts = make_texts(c, 12, (12, 8, 5), append_eos=True, inner_eos_row=0)
    c, r = write_case("neox_seqcls_padeos",
                      [("right", texts, False, ce_loss, labels3), ("left", texts, True, ce_loss, labels3)])
    for tag in ("right", "left"):
        _, _, ids, am = r[tag]
        assert torch.equal(hf_pooled(ids, 0), our_pooled(am) - 1), "pad = eos: HF pools one before the EOS"
    assert mg.close(r["left"][0], r["right"][0])
    print(f"neox_seqcls_padeos  CE right {r['right'][1]:.6f} left {r['left'][1]:.6f}")

    # GPT-2 (prefixed "transformer." names, as GPT2ForSequenceClassification saves), pad = eos, no EOS in text.
    c = model_spec("gpt2_seqcls")[0]
    texts = make_texts(c, 13, (12, 8, 5))
    c, r = write_case("gpt2_seqcls", [("right", texts, False, ce_loss, labels3), ("left", texts, True, ce_loss, labels3)])
    assert mg.close(r["left"][0], r["right"][0])
    print(f"gpt2_seqcls         CE right {r['right'][1]:.6f} left {r['left'][1]:.6f}")

    # Llama reward model (num_labels 1): MSE regression (left padding) and Bradley–Terry (right padding,
    # EOS appended as TRL does; rows 0-1 chosen, 2-3 rejected).
    c = model_spec("llama_reward")[0]
    mse_texts = make_texts(c, 14, (12, 8, 5))
    targets = torch.tensor([0.5, -1.25, 2.0], dtype=F64)
    bt_texts = make_texts(c, 15, (12, 9, 7, 10), append_eos=True)
    c, r = write_case("llama_reward", [("mse", mse_texts, True, mse_loss, targets),
                                       ("bt", bt_texts, False, lambda z, _: bt_loss(z, 2), None)])
    rw = r["bt"][0].squeeze(-1)
    by_hand = sum(float(torch.log1p(torch.exp(-(rw[i] - rw[2 + i])))) for i in range(2)) / 2
    assert abs(by_hand - r["bt"][1]) < 1e-12, "Bradley–Terry loss by hand"
    print(f"llama_reward        MSE {r['mse'][1]:.6f}  BT {r['bt'][1]:.6f}")
    print("all self-checks passed; wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
