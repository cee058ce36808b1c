#!/usr/bin/python3
"""Independent PyTorch reference for src/rl/ (PPO classic + current, DPO, reward model, GRPO, masked stats).

Run:  /usr/bin/python3 tools/rl_reference.py      (torch 1.13; ~1 s; deterministic)
Writes tests/data/rl/rl_golden.json. The formulas are transcribed from docs/hf-semantics.md §5 in TRL's own
vectorised torch style (masked_fill, torch.max/clamp, a reversed GAE loop); gradients come from autograd, so
torch's tie rules (max/min split ties, clamp passes on its closed interval) define the expected gradients.
Inputs are rounded to float32 (what the C++ API takes); all math runs in float64.

Documented guards (the C++ follows them; TRL itself yields NaN or raises there):
  masked_mean of an empty mask = 0; masked_var with n == 1 uses no Bessel factor (= 0), n == 0 gives 0;
  masked_whiten of an all-masked array = 0; classic PPO adds no score to an all-masked row;
  GRPO std of a group of one (or a batch of one) = 0 (as current TRL).
"""
import json
import math
import os

import torch

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "rl", "rl_golden.json")
INVALID_LOGPROB = 1.0


def f32(t):
    """Round to float32, compute in float64."""
    return t.float().double()


def flat(t):
    if isinstance(t, torch.Tensor):
        return [float(v) for v in t.detach().reshape(-1).tolist()]
    return t


# ---------------------------------------------------------------- masked statistics (TRL core.py + guards)
def masked_mean(values, mask, axis=None):
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis).clamp(min=1)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values, mask, unbiased=True):
    mean = masked_mean(values, mask)
    centered = values - mean
    variance = masked_mean(centered ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            variance = variance * (n / (n - 1))
    return variance


def masked_whiten(values, mask, shift_mean=True):
    if mask.sum() == 0:
        return torch.zeros_like(values)
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def kl_penalty(name, logp, ref):
    if name == "kl":
        return logp - ref
    if name == "abs":
        return (logp - ref).abs()
    if name == "mse":
        return 0.5 * (logp - ref).square()
    if name == "k3":
        logr = ref - logp
        return (logr.exp() - 1) - logr
    raise ValueError(name)


# ---------------------------------------------------------------- classic PPO (TRL ≤ 0.11)
def classic_masks(attention_mask, query_len, response_len):
    masks = attention_mask[:, 1:].clone().double()
    for j in range(attention_mask.shape[0]):
        start = query_len[j] - 1
        if attention_mask[j, 0] == 0:
            start += int(attention_mask[j, :].nonzero()[0])
        end = start + response_len[j]
        masks[j, :start] = 0
        masks[j, end:] = 0
    return masks


def classic_rewards(scores, logprobs, ref_logprobs, masks, kl_coef, kl_name):
    rewards, non_score, kls = [], [], []
    for score, logprob, ref_logprob, mask in zip(scores, logprobs, ref_logprobs, masks):
        kl = kl_penalty(kl_name, logprob, ref_logprob) * mask  # C++ reports kl only on the mask
        kls.append(kl)
        nsr = -kl_coef * kl
        non_score.append(nsr)
        reward = nsr.clone()
        nz = mask.nonzero()
        if len(nz):  # guard: TRL raises IndexError on an all-masked row
            reward[nz[-1]] += score
        rewards.append(reward)
    return torch.stack(rewards), torch.stack(non_score), torch.stack(kls)


def classic_advantages(values, rewards, mask, gamma, lam, whiten_rewards):
    lastgaelam = 0
    advantages_reversed = []
    gen_len = rewards.shape[-1]
    values = values * mask
    rewards = rewards * mask
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    for t in reversed(range(gen_len)):
        nextvalues = values[:, t + 1] if t < gen_len - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1]).transpose(0, 1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask)
    return values, advantages, returns


def clip_by_value(x, tensor_min, tensor_max):
    return torch.max(torch.min(x, tensor_max), tensor_min)


def ppo_loss(old_logprobs, values, logprobs, vpreds, pmask, vmask, advantages, returns, cliprange, cliprange_value,
             vf_coef, classic):
    if classic:
        vpredclipped = clip_by_value(vpreds, values - cliprange_value, values + cliprange_value)
    else:
        vpredclipped = torch.clamp(vpreds, values - cliprange_value, values + cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), vmask)
    vf_clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).double(), vmask)
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), pmask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).double(), pmask)
    loss = pg_loss + vf_coef * vf_loss
    d = (logprobs - old_logprobs) * pmask
    stats = dict(
        pg_clipfrac=float(pg_clipfrac), vf_clipfrac=float(vf_clipfrac),
        approx_kl=float(0.5 * masked_mean(d ** 2, pmask)), approx_kl_all=float(0.5 * (d ** 2).mean()),
        policy_kl=float(masked_mean(-d, pmask)), mean_ratio=float(masked_mean(ratio, pmask)))
    return loss, pg_loss, vf_loss, stats


def loss_case(old_logp, old_values, advantages, returns, pmask, vmask, classic, gen, opts):
    B, T = old_logp.shape
    logp_new = f32(old_logp + 0.4 * torch.randn(B, T, generator=gen)).requires_grad_(True)
    v_new = f32(old_values + 0.5 * torch.randn(B, T, generator=gen)).requires_grad_(True)
    loss, pg, vf, stats = ppo_loss(old_logp, old_values, logp_new, v_new, pmask, vmask, advantages, returns,
                                   opts["cliprange"], opts["cliprange_value"], opts["vf_coef"], classic)
    loss.backward()
    return dict(logp_new=flat(logp_new), values_new=flat(v_new), loss=float(loss), pg_loss=float(pg),
                vf_loss=float(vf), d_logp_new=flat(logp_new.grad), d_values_new=flat(v_new.grad), **stats)


def classic_ppo_case(gen, kl_name, whiten_rewards):
    # Sequences of L = 9 tokens: left-padded queries (rows 0, 1), right padding (row 2), a single-token
    # response (row 3) and a row whose response is entirely cut (response_len 0 → all-masked row 4).
    L = 9
    attention = torch.tensor([
        [0, 0, 1, 1, 1, 1, 1, 1, 1],   # 2 left pads, query 3, response 4
        [0, 1, 1, 1, 1, 1, 1, 1, 1],   # 1 left pad, query 2, response 6
        [1, 1, 1, 1, 1, 1, 1, 0, 0],   # query 4, response 3, 2 right pads
        [1, 1, 1, 1, 1, 0, 0, 0, 0],   # query 4, single-token response
        [1, 1, 1, 0, 0, 0, 0, 0, 0],   # query 3, empty response
    ], dtype=torch.long)
    qlen = [3, 2, 4, 4, 3]
    rlen = [4, 6, 3, 1, 0]
    B, T = attention.shape[0], L - 1
    mask = classic_masks(attention, qlen, rlen)
    logp = f32(-torch.rand(B, T, generator=gen) * 3)
    ref = f32(logp + 0.3 * torch.randn(B, T, generator=gen))
    values = f32(torch.randn(B, T, generator=gen))
    scores = f32(torch.randn(B, generator=gen) * 2)
    kl_coef, gamma, lam = 0.2, 0.97, 0.95
    rewards, non_score, kls = classic_rewards(scores, logp, ref, mask, kl_coef, kl_name)
    rewards, non_score, kls = f32(rewards), f32(non_score), f32(kls)
    mvalues, adv, returns = classic_advantages(values, rewards, mask, gamma, lam, whiten_rewards)
    mvalues, adv, returns = f32(mvalues), f32(adv), f32(returns)
    opts = dict(cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
    loss = loss_case(logp, mvalues, adv, returns, mask, mask, True, gen, opts)
    mean_kl = float((kls * mask).sum(-1).mean())
    return dict(B=B, T=T, L=L, attention_mask=flat(attention), query_len=qlen, response_len=rlen,
                kl_penalty=kl_name, kl_coef=kl_coef, gamma=gamma, lam=lam, whiten_rewards=whiten_rewards,
                logp=flat(logp), ref_logp=flat(ref), values=flat(values), scores=flat(scores),
                mask=flat(mask), rewards=flat(rewards), non_score=flat(non_score), kl=flat(kls), mean_kl=mean_kl,
                masked_values=flat(mvalues), advantages=flat(adv), returns=flat(returns), loss_opts=opts,
                loss=loss)


# ---------------------------------------------------------------- current PPO (TRL ≥ 0.12)
def first_true_indices(bools, dtype=torch.long):
    row_len = bools.size(-1)
    zero_or_index = row_len * (~bools).type(dtype) + torch.arange(row_len, dtype=dtype)
    return torch.min(zero_or_index, dim=-1).values


def current_ppo_case(gen, kl_estimator, whiten_rewards):
    pad = 0
    responses = torch.tensor([
        [5, 6, 7, 0, 0, 0, 0],   # seq_len 2: score at 3
        [5, 6, 7, 8, 9, 4, 3],   # no pad: seq_len 6 = T−1, score at 6
        [5, 6, 7, 8, 9, 4, 0],   # seq_len 5: score at 6 (last index)
        [5, 0, 0, 0, 0, 0, 0],   # single-token response
        [0, 0, 0, 0, 0, 0, 0],   # empty response: seq_len −1, all-masked policy row, score at 0
    ], dtype=torch.long)
    B, T = responses.shape
    sequence_lengths = first_true_indices(responses == pad) - 1
    logprobs = f32(-torch.rand(B, T, generator=gen) * 3)
    ref_logprobs = f32(logprobs + 0.3 * torch.randn(B, T, generator=gen))
    values_in = f32(torch.randn(B, T, generator=gen))
    scores = f32(torch.randn(B, generator=gen) * 2)
    kl_coef, gamma, lam = 0.05, 1.0, 0.95
    # — verbatim structure of ppo_trainer.py steps 4-6 —
    response_idxs = torch.arange(T).repeat(B, 1)
    padding_mask = response_idxs > sequence_lengths.unsqueeze(1)
    lp = torch.masked_fill(logprobs, padding_mask, INVALID_LOGPROB)
    rlp = torch.masked_fill(ref_logprobs, padding_mask, INVALID_LOGPROB)
    sequence_lengths_p1 = sequence_lengths + 1
    padding_mask_p1 = response_idxs > (sequence_lengths_p1.unsqueeze(1))
    values = torch.masked_fill(values_in, padding_mask_p1, 0)
    logr = rlp - lp
    kl = -logr if kl_estimator == "k1" else (logr.exp() - 1) - logr
    non_score_reward = -kl_coef * kl
    rewards = non_score_reward.clone()
    actual_start = torch.arange(rewards.size(0))
    actual_end = torch.where(sequence_lengths_p1 < rewards.size(1), sequence_lengths_p1, sequence_lengths)
    rewards[[actual_start, actual_end]] += scores
    rewards = f32(rewards)
    raw_rewards = rewards.clone()
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask=(~padding_mask_p1).double(), shift_mean=False)
        rewards = torch.masked_fill(rewards, padding_mask_p1, 0)
    lastgaelam = 0
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + values
    advantages = masked_whiten(advantages, (~padding_mask).double())
    advantages = torch.masked_fill(advantages, padding_mask, 0)
    pmask, vmask = (~padding_mask).double(), (~padding_mask_p1).double()
    advantages, returns, values = f32(advantages), f32(returns), f32(values)
    opts = dict(cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
    loss = loss_case(lp, values, advantages, returns, pmask, vmask, False, gen, opts)
    return dict(B=B, T=T, responses=flat(responses.double()), pad_token_id=pad,
                seq_len=[int(v) for v in sequence_lengths], kl_estimator=kl_estimator, kl_coef=kl_coef,
                gamma=gamma, lam=lam, whiten_rewards=whiten_rewards, logp=flat(logprobs), ref_logp=flat(ref_logprobs),
                values=flat(values_in), scores=flat(scores), policy_mask=flat(pmask), value_mask=flat(vmask),
                rewards=flat(raw_rewards), kl=flat(kl), masked_values=flat(values), advantages=flat(advantages),
                returns=flat(returns), loss_opts=opts, loss=loss)


# ---------------------------------------------------------------- KL controller, score scaling
def kl_controller_case():
    value, target, horizon = 0.2, 6.0, 10000.0
    seq = [(1.0, 256), (12.0, 256), (6.6, 128), (5.0, 512)]
    out = []
    for current, n_steps in seq:
        e = min(max(current / target - 1, -0.2), 0.2)
        value *= 1 + e * n_steps / horizon
        out.append(value)
    return dict(init=0.2, target=target, horizon=horizon, current=[c for c, _ in seq], n_steps=[n for _, n in seq],
                values=out)


def score_case(gen):
    batches = [f32(torch.randn(6, generator=gen) * 3 + 1), f32(torch.randn(4, generator=gen) * 2 - 1),
               f32(torch.randn(1, generator=gen))]
    res = {}
    for norm in (False, True):
        mean, std, var, count = 0.0, 1.0, 1.0, 1e-24
        outs, moments = [], []
        for xs in batches:
            xs_count = xs.numel()
            xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
            delta = xs_mean - mean
            tot_count = count + xs_count
            new_sum = xs_var * xs_count
            old_sum = var * count + delta ** 2 * count * xs_count / tot_count
            tot_sum = old_sum + new_sum
            mean = float(mean + delta * xs_count / tot_count)
            new_var = tot_sum / tot_count
            std = float((new_var * tot_count / (tot_count - 1)).sqrt())
            var = float(new_var)
            count = tot_count
            moments.append([mean, std, var, count])
            factor = std + 1.1920928955078125e-07
            s = (xs - mean) / factor if norm else xs / factor
            s = torch.clip(s, -1.5, 1.5)
            outs.append(flat(s))
        res["norm" if norm else "scale"] = dict(outputs=outs, moments=moments)
    return dict(batches=[flat(b) for b in batches], score_clip=1.5, **res)


# ---------------------------------------------------------------- DPO (v0.11 dpo_loss) and reward model
def dpo_case(gen, loss_type, label_smoothing=0.0, reference_free=False):
    n = 6
    pc = f32(-torch.rand(n, generator=gen) * 40)
    pr = f32(-torch.rand(n, generator=gen) * 40)
    rc = f32(pc + torch.randn(n, generator=gen) * 4)
    rr = f32(pr + torch.randn(n, generator=gen) * 4)
    clen = torch.randint(1, 30, (n,), generator=gen)
    rlen = torch.randint(1, 30, (n,), generator=gen)
    if loss_type == "hinge":  # put one pair in the flat region of relu(1 − βz)
        rc[0] = f32(pc[0] - 30.0)
        rr[0] = f32(pr[0] + 30.0)
    beta = 0.1
    pc_, pr_ = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
    a, b, c, d = pc_, pr_, rc, rr
    if loss_type == "ipo":
        a, b, c, d = pc_ / clen, pr_ / rlen, rc / clen, rr / rlen
    pi_logratios = a - b
    ref_logratios = 0 if reference_free else c - d
    logits = pi_logratios - ref_logratios
    F = torch.nn.functional
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * (a - c).detach()
    rejected_rewards = beta * (b - d).detach()
    losses.mean().backward()
    return dict(loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, reference_free=reference_free,
                policy_chosen=flat(pc), policy_rejected=flat(pr), ref_chosen=flat(rc), ref_rejected=flat(rr),
                chosen_len=[int(v) for v in clen], rejected_len=[int(v) for v in rlen], loss=flat(losses),
                mean_loss=float(losses.mean()), d_policy_chosen=flat(pc_.grad), d_policy_rejected=flat(pr_.grad),
                rewards_chosen=flat(chosen_rewards), rewards_rejected=flat(rejected_rewards),
                margins=flat(chosen_rewards - rejected_rewards),
                accuracies=flat((chosen_rewards > rejected_rewards).double()))


def reward_case(gen):
    n = 5
    c = f32(torch.randn(n, generator=gen)).requires_grad_(True)
    r = f32(torch.randn(n, generator=gen)).requires_grad_(True)
    margin = f32(torch.rand(n, generator=gen))
    coef = 0.01
    losses = -torch.nn.functional.logsigmoid(c - r - margin)
    loss = losses.mean() + coef * torch.mean((c + r) ** 2)
    loss.backward()
    return dict(chosen=flat(c), rejected=flat(r), margin=flat(margin), center_coef=coef, loss=flat(losses),
                mean_loss=float(loss), d_chosen=flat(c.grad), d_rejected=flat(r.grad),
                accuracy=float((c > r).double().mean()))


# ---------------------------------------------------------------- GRPO (current grpo_trainer.py)
def grpo_advantages(rewards, G, scale):
    mean_grouped = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    advantages = rewards - mean_grouped
    if scale in ("group", "none"):
        std = rewards.view(-1, G).std(dim=1).repeat_interleave(G, dim=0) if G > 1 else torch.zeros_like(rewards)
    else:
        std = rewards.std().expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    if scale != "none":
        advantages = advantages / (std + 1e-4)
    return advantages, std


def grpo_adv_cases(gen):
    # group 1 has zero variance (all 1.0) → advantage 0; group 2 binary rewards; group 3 random
    rewards = torch.cat([torch.ones(4), torch.tensor([0.0, 1.0, 1.0, 0.0]), f32(torch.randn(4, generator=gen))])
    out = {}
    for scale in ("group", "batch", "none"):
        a, s = grpo_advantages(rewards, 4, scale)
        out[scale] = dict(advantages=flat(a), std=flat(s))
    a1, s1 = grpo_advantages(rewards, 1, "group")
    out["group_G1"] = dict(advantages=flat(a1), std=flat(s1))
    return dict(rewards=flat(rewards), G=4, cases=out)


def grpo_loss_case(gen, loss_type, beta, with_old, delta=None):
    B, T = 4, 6
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
                        dtype=torch.double)  # partial, full, single-token, all-masked rows
    logp = f32(-torch.rand(B, T, generator=gen) * 2).requires_grad_(True)
    old = f32(logp.detach() + 0.6 * torch.randn(B, T, generator=gen))
    ref = f32(logp.detach() + 0.3 * torch.randn(B, T, generator=gen))
    adv = f32(torch.tensor([1.3, -0.7, 0.9, -1.1]))
    eps_low, eps_high, GA, max_len, dapo_norm = 0.2, 0.28, 2, 8, 13.0
    per_token_logps = logp
    old_per_token_logps = old if with_old else per_token_logps.detach()
    per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    is_low = ((coef_1 < 1 - eps_low) & (adv.unsqueeze(1) < 0)).double()
    is_high = ((coef_1 > 1 + eps_high) & (adv.unsqueeze(1) > 0)).double()
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss1 = coef_1 * adv.unsqueeze(1)
    per_token_loss2 = coef_2 * adv.unsqueeze(1)
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / GA
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / GA
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_len) / GA
    else:
        loss = (per_token_loss * mask).sum() / dapo_norm
    loss.backward()
    mmean = lambda x: float((x * mask).sum() / mask.sum())
    return dict(B=B, T=T, loss_type=loss_type, beta=beta, with_old=with_old, delta=delta, epsilon_low=eps_low,
                epsilon_high=eps_high, gradient_accumulation_steps=GA, max_completion_length=max_len,
                dapo_normalizer=dapo_norm, mask=flat(mask), logp=flat(logp), logp_old=flat(old), ref_logp=flat(ref),
                advantages=flat(adv), loss=float(loss), d_logp=flat(logp.grad),
                mean_kl=mmean(per_token_kl.detach()) if beta != 0 else 0.0, low_clip=mmean(is_low),
                high_clip=mmean(is_high), region_clip=mmean(((is_low + is_high) > 0).double()))


# ---------------------------------------------------------------- small helpers
def stats_case(gen):
    x = f32(torch.randn(3, 5, generator=gen) * 2 + 0.5)
    masks = {"partial": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.double),
             "single": torch.zeros(3, 5).index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(1.0)),
             "empty": torch.zeros(3, 5)}
    out = {}
    for name, m in masks.items():
        out[name] = dict(mask=flat(m), mean=float(masked_mean(x, m)), var=float(masked_var(x, m)),
                         var_biased=float(masked_var(x, m, unbiased=False)),
                         row_mean=flat(masked_mean(x, m, axis=-1)), whiten=flat(masked_whiten(x, m)),
                         whiten_noshift=flat(masked_whiten(x, m, shift_mean=False)))
    return dict(x=flat(x), rows=3, cases=out)


def kl_est_case(gen):
    logp = f32(-torch.rand(10, generator=gen) * 3)
    ref = f32(logp + torch.randn(10, generator=gen) * 0.5)
    out = {}
    for name in ("kl", "abs", "mse", "k3"):
        lp = logp.clone().requires_grad_(True)
        k = kl_penalty(name, lp, ref)
        k.sum().backward()
        out[name] = dict(kl=flat(k), grad=flat(lp.grad))
    return dict(logp=flat(logp), ref=flat(ref), cases=out)


def logits_case(gen):
    z = f32(torch.randn(3, 11, generator=gen) * 3)
    p = torch.softmax(z, -1)
    ent = torch.logsumexp(z, -1) - (p * z).sum(-1)
    tokens = [0, 7, 10]
    lsm = [float(torch.log_softmax(z[i], -1)[t]) for i, t in enumerate(tokens)]
    return dict(logits=flat(z), V=11, entropy=flat(ent), tokens=tokens, log_softmax=lsm)


def main():
    gen = torch.Generator().manual_seed(1234)
    golden = dict(
        note="Generated by tools/rl_reference.py; see tests/data/rl/README.md.",
        masked_stats=stats_case(gen),
        kl_estimators=kl_est_case(gen),
        logits=logits_case(gen),
        classic_ppo=[classic_ppo_case(gen, "kl", False), classic_ppo_case(gen, "abs", True),
                     classic_ppo_case(gen, "mse", False)],
        current_ppo=[current_ppo_case(gen, "k1", False), current_ppo_case(gen, "k3", True)],
        kl_controller=kl_controller_case(),
        scores=score_case(gen),
        dpo=[dpo_case(gen, "sigmoid"), dpo_case(gen, "sigmoid", label_smoothing=0.1),
             dpo_case(gen, "sigmoid", reference_free=True), dpo_case(gen, "hinge"), dpo_case(gen, "ipo")],
        reward_model=reward_case(gen),
        grpo_advantages=grpo_adv_cases(gen),
        grpo_loss=[grpo_loss_case(gen, lt, beta, with_old, delta)
                   for lt, beta, with_old, delta in [("grpo", 0.0, True, None), ("bnpo", 0.04, True, None),
                                                     ("dr_grpo", 0.04, True, None), ("dapo", 0.0, True, None),
                                                     ("dapo", 0.04, False, None), ("grpo", 0.04, True, 1.25)]],
    )
    # Self-checks that the cases exercise what they claim to.
    for c in golden["classic_ppo"] + golden["current_ppo"]:
        assert 0 < c["loss"]["pg_clipfrac"] < 1 and 0 < c["loss"]["vf_clipfrac"] < 1, "no clipping exercised"
    g = golden["grpo_loss"][0]
    assert g["low_clip"] > 0 and g["high_clip"] > 0, "GRPO: clipping not exercised on both sides"
    assert all(a == 0 for a in golden["grpo_advantages"]["cases"]["group"]["advantages"][:4])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(golden, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print("wrote", os.path.relpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
