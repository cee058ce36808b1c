#!/usr/bin/python3
# Writes tests/data/quant/*.safetensors: golden vectors for llmtune's quantization kernels (src/kernels/quant4,
# quant8), made by an independent re-implementation of bitsandbytes' algorithms in plain PyTorch (hf-semantics §3).
#
# Run with Debian's interpreter (torch 1.13; bitsandbytes is NOT needed or used):
#     /usr/bin/python3 tools/bnb_reference.py
# Deterministic (fixed seeds, one thread): two runs give byte-identical files.
#
# What is re-implemented, and which bitsandbytes behaviour each piece follows:
#   * create_dynamic_map(signed)  — bitsandbytes/functional.py (current: non_sign_bits = 7 for both signs), run in
#     torch float32 exactly as bitsandbytes runs it (torch.linspace, float32 means, float32 scalar products).
#   * 4-bit codes                 — functional.get_4bit_type: NF4 list; FP4 = [0, .0625, 8, 12, 4, 6, 2, 3, -…] / 12
#     in float32 (the values the CUDA kernels use). NOTE: backends/default/utils.py ships an FP4 table rounded to
#     4 decimals (0.0052, 0.6667, …); we do not copy that rounding.
#   * quantize_blockwise / quantize_4bit — backends/default/ops.py: absmax = max|x| per block (float32),
#     scaled = clamp(x * (1/absmax), -1, 1) (reciprocal first, then a product), code index = argmin |scaled - code|
#     in float32 (ties -> lowest index in table order; NaN, i.e. an all-zero block, -> index 0); 4-bit: the scaled
#     vector is padded with 0.0 to an even length (so the pad nibble is the code of 0.0: NF4 7, FP4 0), element 2k
#     goes to the high nibble.
#   * dequantize: code[q] * absmax in float32, then cast (bf16: round-to-nearest-even of the float32 result, as the
#     CUDA kernels do; the default backend instead rounds the code to bf16 first — not followed).
#   * double quant (compress_statistics): offset = mean(absmax) — computed here in float64 and rounded to float32
#     (torch's float32 CPU sum order cannot be reproduced cheaply, and CUDA's differs anyway); then
#     quantize_blockwise(absmax - offset, signed dynamic map, 256); dequant absmax = code[q] * absmax2 + offset.
#   * LLM.int8 row-wise: SCB = max|W| per row, W8 = round(W * (127 / SCB)) (torch: reciprocal(SCB) * 127, round
#     half to even); dequant = W8 * SCB * float32(1/127) (int8_vectorwise_dequant).

import json
import os
import struct

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "quant")

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------------------
# safetensors, written by hand (hf-semantics §2.4)

_ST = {torch.float32: ("F32", "<f4"), torch.uint8: ("U8", "u1"), torch.int8: ("I8", "i1"),
       torch.bfloat16: ("BF16", "<u2")}
_NP = {"F32": "<f4", "U8": "u1", "I8": "i1", "BF16": "<u2"}


def save_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in sorted(metadata.items())}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        code, np_dtype = _ST[t.dtype]
        arr = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        data = arr.astype(np_dtype).tobytes()
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
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__")
    data = raw[8 + n:]
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=_NP[v["dtype"]]).reshape(v["shape"]).copy()
        t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16) if v["dtype"] == "BF16" else torch.from_numpy(arr)
        out[name] = t
    return out, meta


def write_checked(name, tensors, metadata):
    path = os.path.join(OUT, name)
    save_safetensors(path, tensors, metadata)
    back, meta = load_safetensors(path)
    assert set(back) == set(tensors) and meta == {k: str(v) for k, v in metadata.items()}, path
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, (path, k)
        assert torch.equal(back[k].view(-1).view(torch.uint8), v.contiguous().view(-1).view(torch.uint8)), (path, k)
    print(f"wrote {os.path.relpath(path, ROOT)}")


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8))


# ---------------------------------------------------------------------------------------------------------
# Code tables

def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map (current version), float32 torch arithmetic as in bitsandbytes."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    assert additional_items == 0  # the 8-bit/7-exponent-bit case used everywhere
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]


def get_4bit_code(quant_type):
    if quant_type == "nf4":
        return torch.tensor(NF4, dtype=torch.float32)
    data = torch.tensor([0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0])
    data.div_(data.abs().max())
    return data


# ---------------------------------------------------------------------------------------------------------
# Blockwise quantization (backends/default/ops.py semantics)

def _scale_blocks(flat, blocksize):
    """absmax per block and clamp(x * (1/absmax), -1, 1), full blocks and the partial one handled alike."""
    n = flat.numel()
    rem = n % blocksize
    full = n // blocksize
    blocks = full + (1 if rem else 0)
    absmax = torch.zeros(blocks, dtype=torch.float32)
    parts = []
    if full:
        fb = flat[: n - rem].reshape(full, blocksize)
        absmax[:full] = torch.abs(fb).max(dim=-1)[0]
        parts.append(torch.clamp(fb * (1 / absmax[:full].view(-1, 1)), -1, 1).reshape(-1))
    if rem:
        tail = flat[n - rem:]
        absmax[-1] = torch.abs(tail).max()
        parts.append(torch.clamp(tail * (1 / absmax[-1]), -1, 1))
    return absmax, torch.cat(parts)


def nearest_index(scaled, code):
    """argmin |scaled - code| in float32; ties and NaN -> the lowest index (torch.argmin)."""
    return torch.argmin(torch.abs(scaled.view(-1, 1) - code.view(1, -1)), dim=-1)


def quantize_blockwise(A, code, blocksize):
    absmax, scaled = _scale_blocks(A.reshape(-1).float(), blocksize)
    return nearest_index(scaled, code).to(torch.uint8), absmax


def dequantize_blockwise(q, absmax, code, blocksize, dtype=torch.float32):
    n = q.numel()
    scale = absmax.repeat_interleave(blocksize)[:n]
    return (code[q.reshape(-1).long()] * scale).to(dtype)


def quantize_4bit(A, blocksize, quant_type):
    absmax, scaled = _scale_blocks(A.reshape(-1).float(), blocksize)
    if scaled.numel() % 2:
        scaled = torch.nn.functional.pad(scaled, (0, 1), value=0.0)
    q = nearest_index(scaled, get_4bit_code(quant_type)).to(torch.uint8)
    packed = (q[::2] << 4) | q[1::2]
    return packed.view(-1, 1), absmax


def unpack_4bit(packed, n):
    p = packed.reshape(-1)
    q = torch.empty(p.numel() * 2, dtype=torch.long)
    q[::2] = (p >> 4).long()
    q[1::2] = (p & 0xF).long()
    return q[:n]


def dequantize_4bit(packed, absmax, blocksize, quant_type, n, dtype=torch.float32):
    q = unpack_4bit(packed, n)
    scale = absmax.repeat_interleave(blocksize)[:n]
    return (get_4bit_code(quant_type)[q] * scale).to(dtype)


DYN_SIGNED = create_dynamic_map(True)
DYN_UNSIGNED = create_dynamic_map(False)


def double_quant(absmax):
    offset = absmax.double().mean().float()
    qabsmax, absmax2 = quantize_blockwise(absmax - offset, DYN_SIGNED, 256)
    return qabsmax, absmax2, offset


def dequant_absmax(qabsmax, absmax2, offset):
    return dequantize_blockwise(qabsmax, absmax2, DYN_SIGNED, 256) + offset


def int8_rowwise_quant(W):
    scb = torch.abs(W).max(dim=1).values.float()
    w8 = torch.round(W * (127.0 / scb.unsqueeze(-1))).to(torch.int8)
    return w8, scb


def int8_rowwise_dequant(w8, scb):
    return w8 * scb.view(-1, 1) * 7.874015718698502e-3


# ---------------------------------------------------------------------------------------------------------
# Self-checks (abort before writing anything wrong)

def check_tables():
    for signed, t in ((True, DYN_SIGNED), (False, DYN_UNSIGNED)):
        assert t.numel() == 256 and torch.all(t[1:] > t[:-1]), "dynamic map must be strictly increasing"
        assert t[-1].item() == 1.0 and (t == 0).sum().item() == 1
        assert (t[0].item() < -0.99) if signed else (t[0].item() == 0.0)
    fp4 = get_4bit_code("fp4")
    assert fp4[3].item() == 1.0 and fp4[11].item() == -1.0 and fp4[1].item() == np.float32(0.0625 / 12)


def check_nearest(scaled, code):
    """torch.argmin rule == numpy first-minimum over float32 distances, element by element."""
    q = nearest_index(scaled, code).numpy()
    s = scaled.numpy().astype(np.float32)
    c = code.numpy().astype(np.float32)
    d = np.abs(s[:, None] - c[None, :]).astype(np.float32)
    assert np.array_equal(q, np.argmin(d, axis=1)), "argmin tie rule"


def check_roundtrip(x, deq, absmax, blocksize, code):
    """|x - deq| <= (largest distance from a point of [-1, 1] to the code) * absmax of the block."""
    srt = torch.sort(code)[0]
    lo = -1.0 if srt[0].item() < 0 else 0.0  # unsigned maps only see [0, 1]
    half = max(((srt[1:] - srt[:-1]).max() / 2).item(), srt[0].item() - lo, 1.0 - srt[-1].item())
    scale = absmax.repeat_interleave(blocksize)[: x.numel()]
    err = (x.reshape(-1) - deq.reshape(-1)).abs()
    assert torch.all(err <= (half + 4e-7) * scale + 1e-30), "round-trip bound"  # + float32 rounding


# ---------------------------------------------------------------------------------------------------------
# Inputs

def gen_weights(shape, seed, zero_block=None, blocksize=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    # Rows of different scale so absmax varies a lot between blocks (what double quant has to represent).
    flat = x.reshape(-1)
    flat *= torch.exp(torch.randn(flat.numel() // 97 + 1, generator=g, dtype=torch.float64)).repeat_interleave(97)[: flat.numel()] * 0.02
    x = x.float()
    flat = x.reshape(-1)
    if zero_block is not None:
        flat[zero_block * blocksize:(zero_block + 1) * blocksize] = 0.0
    flat[5] = -flat.abs().max() * 3  # one outlier
    return x


def tie_inputs(code, blocksize):
    """Values sitting exactly on (and one ulp around) the float32 midpoints between neighbouring code values, with
    absmax 1 in each block so the scaled value equals the input (x * (1/1) is exact)."""
    srt = torch.sort(code)[0].numpy().astype(np.float32)
    vals = []
    for a, b in zip(srt[:-1], srt[1:]):
        if a == b:
            continue
        m = np.float32((a + b) / np.float32(2))
        vals += [m, np.nextafter(m, np.float32(-2)), np.nextafter(m, np.float32(2))]
    vals += [np.float32(v) for v in srt]
    out = []
    for i in range(0, len(vals), blocksize - 1):
        chunk = vals[i:i + blocksize - 1]
        out += [np.float32(1.0)] + chunk + [np.float32(0.0)] * (blocksize - 1 - len(chunk))
    return torch.tensor(np.array(out, dtype=np.float32))


def reciprocal_inputs(code, blocksize, seed):
    """Blocks whose values are chosen so that x * (1/absmax) (what bitsandbytes computes) and x / absmax pick
    different codes: these pin down the scaling rule, not just the nearest-code rule."""
    c = code.numpy().astype(np.float32)
    srt = np.unique(c)
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(8):
        a = np.float32(np.exp(rng.uniform(-6, 4)))
        r = np.float32(1) / a
        found = []
        for lo, hi in zip(srt[:-1], srt[1:]):
            x = np.float32(np.float32((lo + hi) / np.float32(2)) * a)
            for _ in range(8):
                x = np.nextafter(x, np.float32(-np.inf))
            for _ in range(17):
                if abs(x) < a:
                    s1 = np.float32(np.clip(np.float32(x * r), -1, 1))
                    s2 = np.float32(np.clip(np.float32(x / a), -1, 1))
                    q1 = np.argmin(np.abs(s1 - c).astype(np.float32))
                    q2 = np.argmin(np.abs(s2 - c).astype(np.float32))
                    if q1 != q2:
                        found.append(x)
                x = np.nextafter(x, np.float32(np.inf))
        found = found[: blocksize - 1]
        out += [a] + found + [np.float32(0.0)] * (blocksize - 1 - len(found))
    return torch.tensor(np.array(out, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------
# Cases

def q4_case(name, x, quant_type, blocksize, dq):
    n = x.numel()
    packed, absmax = quantize_4bit(x, blocksize, quant_type)
    code = get_4bit_code(quant_type)
    scaled = _scale_blocks(x.reshape(-1).float(), blocksize)[1]
    check_nearest(scaled, code)
    t = {"input": x.contiguous(), "packed": packed, "absmax": absmax}
    scales = absmax
    if dq:
        qabsmax, absmax2, offset = double_quant(absmax)
        scales = dequant_absmax(qabsmax, absmax2, offset)
        t.update(qabsmax=qabsmax, absmax2=absmax2, offset=offset.view(1), absmax_dequant=scales)
    deq = dequantize_4bit(packed, scales, blocksize, quant_type, n)
    if not dq:
        check_roundtrip(x, deq, absmax, blocksize, code)
    t["dequant"] = deq.view(x.shape)
    t["dequant_bf16"] = dequantize_4bit(packed, scales, blocksize, quant_type, n, torch.bfloat16).view(x.shape)
    assert same_bits(t["dequant_bf16"], deq.to(torch.bfloat16).view(x.shape))
    meta = {"quant_type": quant_type, "blocksize": blocksize, "double_quant": int(dq),
            "rows": x.shape[0] if x.dim() == 2 else 1, "cols": x.shape[-1]}
    write_checked(f"q4_{name}.safetensors", t, meta)


def q8_case(name, x, signed, blocksize):
    code = DYN_SIGNED if signed else DYN_UNSIGNED
    q, absmax = quantize_blockwise(x, code, blocksize)
    check_nearest(_scale_blocks(x.reshape(-1).float(), blocksize)[1], code)
    deq = dequantize_blockwise(q, absmax, code, blocksize)
    check_roundtrip(x, deq, absmax, blocksize, code)
    write_checked(f"q8_{name}.safetensors", {"input": x, "q": q, "absmax": absmax, "dequant": deq},
                  {"signed": int(signed), "blocksize": blocksize})


def main():
    os.makedirs(OUT, exist_ok=True)
    check_tables()

    # Informational: how much of the dynamic map depends on torch's float32 linspace rounding.
    def ideal_map(signed):
        vals = [0.0, 1.0]
        for i in range(7):
            k = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
            b = np.array([np.float32(0.1 + (1 - 0.1) * j / (k - 1)) for j in range(k)], dtype=np.float32)
            m = ((b[:-1] + b[1:]) / np.float32(2)).astype(np.float32) * np.float32(10.0 ** (i - 6))
            vals += list(m.astype(np.float32)) + (list(-m.astype(np.float32)) if signed else [])
        return np.sort(np.array(vals, dtype=np.float32))
    for signed, t in ((True, DYN_SIGNED), (False, DYN_UNSIGNED)):
        diff = int((ideal_map(signed) != t.numpy()).sum())
        print(f"dynamic map ({'signed' if signed else 'unsigned'}): {diff} of 256 entries differ from a "
              f"correctly-rounded linspace")

    write_checked("maps.safetensors", {"dynamic_signed": DYN_SIGNED, "dynamic_unsigned": DYN_UNSIGNED,
                                       "nf4": get_4bit_code("nf4"), "fp4": get_4bit_code("fp4")}, {})

    v1000 = gen_weights((1000,), 1, zero_block=3)
    m77 = gen_weights((77, 131), 2, zero_block=10)
    q4_case("nf4_1000_b64", v1000, "nf4", 64, False)
    q4_case("fp4_1000_b64", v1000, "fp4", 64, False)
    q4_case("nf4_77x131_b64_dq", m77, "nf4", 64, True)
    q4_case("fp4_77x131_b32_dq", m77, "fp4", 32, True)   # 316 blocks -> 2 nested blocks, one partial
    q4_case("nf4_77x131_b128", m77, "nf4", 128, False)
    q4_case("fp4_1001_b4096", gen_weights((1001,), 3), "fp4", 4096, False)  # one partial block, odd count
    q4_case("nf4_ties_b64", tie_inputs(get_4bit_code("nf4"), 64), "nf4", 64, False)
    q4_case("fp4_ties_b64", tie_inputs(get_4bit_code("fp4"), 64), "fp4", 64, False)
    q4_case("nf4_recip_b64", reciprocal_inputs(get_4bit_code("nf4"), 64, 6), "nf4", 64, False)
    q4_case("fp4_recip_b64", reciprocal_inputs(get_4bit_code("fp4"), 64, 7), "fp4", 64, False)

    g = torch.Generator().manual_seed(4)
    s = torch.randn(3000, generator=g) * torch.exp(torch.randn(3000, generator=g) * 3)
    s[512:768] = 0.0  # an all-zero block
    q8_case("signed_3000_b256", s, True, 256)
    q8_case("unsigned_3000_b256", s * s, False, 256)
    q8_case("signed_5000_b2048", torch.randn(5000, generator=g) * 1e-3, True, 2048)
    q8_case("signed_ties_b256", tie_inputs(DYN_SIGNED, 256), True, 256)
    q8_case("unsigned_ties_b256", tie_inputs(DYN_UNSIGNED, 256).abs(), False, 256)
    q8_case("signed_recip_b256", reciprocal_inputs(DYN_SIGNED, 256, 8), True, 256)

    W = gen_weights((77, 131), 5)
    W[7] = 0.0
    W[9, 3] = 1e-30  # a row whose absmax is tiny
    w8, scb = int8_rowwise_quant(W[torch.arange(77) != 7])  # torch gives NaN->int8 garbage for a zero row
    w8_full = torch.zeros(77, 131, dtype=torch.int8)
    scb_full = torch.zeros(77)
    keep = torch.arange(77) != 7
    w8_full[keep] = w8
    scb_full[keep] = scb
    deq = int8_rowwise_dequant(w8_full, scb_full)
    assert torch.all((W - deq).abs() <= scb_full.view(-1, 1) / 127 * 0.5001 + 1e-30)
    write_checked("int8_rowwise_77x131.safetensors", {"input": W, "w8": w8_full, "scb": scb_full, "dequant": deq}, {})


if __name__ == "__main__":
    main()
