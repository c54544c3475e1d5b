#!/usr/bin/env python3
"""Peers of `attn bench`, timed in the same run on the same GPU: what a user would otherwise reach for.

Softmax attention through PyTorch's scaled_dot_product_attention with each backend forced (flash, cuDNN,
efficient) and through FlexAttention (kernels "forward"/"backward", variant "mha"); plain PyTorch layer forwards of
tpa, sas, agent and flatten ("layer forward") and the chunked lightning core ("forward+backward") written from
docs/variants.md (in the repository root); GQA decode against a long cache; and the device-to-device copy
bandwidth that decode is measured against. Writes JSON rows that `attn bench` joins with its own:
    {"device", "date", "torch", "rows": [{"kernel", "variant", "dtype", "causal", "T", "ms", "tflops", "gbps"}]}
Usage: python3 torch_peers.py --out peers.json [--tokens 16384] [--lengths 512 1024 ...] [--quick]
"""
import argparse
import datetime
import json
import math
import sys

import torch
import torch.nn.functional as F

DTYPE = torch.bfloat16


def timed(fn, repeats=10, warmup=3):
    """Median milliseconds of fn() over `repeats` runs after `warmup`, with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def attention_flops(b, h, t, d, causal, backward=False):
    """FlashAttention's count: forward 4·T²·d·H per sequence, halved when causal; backward 2.5× forward."""
    f = 4.0 * b * h * t * t * d * (0.5 if causal else 1.0)
    return 2.5 * f if backward else f


def row(kernel, variant, causal, t, ms, peer, flops=None, nbytes=None):
    return {
        "kernel": kernel, "variant": variant, "dtype": "bf16", "causal": causal, "T": t, "ms": ms, "peer": peer,
        "tflops": None if flops is None else flops / (ms * 1e-3) / 1e12,
        "gbps": None if nbytes is None else nbytes / (ms * 1e-3) / 1e9,
    }


def sdpa_rows(rows, t, tokens, causal, d=128, heads=16):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b = max(1, tokens // t)
    q, k, v = (torch.randn(b, heads, t, d, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    for name, backend in (("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                bwd = timed(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
        except RuntimeError as e:  # backend unavailable for this shape/device
            print(f"{name} T={t}: {e}".splitlines()[0], file=sys.stderr)
            continue
        rows.append(row("forward", "mha", causal, t, fwd, name, attention_flops(b, heads, t, d, causal)))
        rows.append(row("backward", "mha", causal, t, bwd, name, attention_flops(b, heads, t, d, causal, True)))
        if causal and name == "sdpa-flash":
            # Issue 5's Lightning target: its forward+backward against causal softmax attention's on the same shape.
            rows.append(row("forward+backward", "transnormer", True, t, fwd + bwd, name))
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention)
        mask = create_block_mask(lambda b_, h_, qi, ki: qi >= ki, None, None, t, t) if causal else None
        fwd = timed(lambda: flex(q, k, v, block_mask=mask))
        o = flex(q, k, v, block_mask=mask)
        bwd = timed(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
        rows.append(row("forward", "mha", causal, t, fwd, "flex", attention_flops(b, heads, t, d, causal)))
        rows.append(row("backward", "mha", causal, t, bwd, "flex", attention_flops(b, heads, t, d, causal, True)))
    except Exception as e:  # FlexAttention needs torch ≥ 2.5 and a working compiler
        print(f"flex T={t}: {e}".splitlines()[0], file=sys.stderr)


def lightning_chunked(q, k, v, decay, block=64):
    """o_t = Σ_{s≤t} λ^(t−s) (q_t·k_s) v_s, chunked as Lightning Attention-2 (q, k [B,H,T,d], v [B,H,T,e], λ [H])."""
    b, h, t, d = q.shape
    e = v.shape[-1]
    lam = decay.view(1, h, 1, 1).to(torch.float32)
    idx = torch.arange(block, device=q.device, dtype=torch.float32)
    diff = idx.view(-1, 1) - idx.view(1, -1)
    mask = torch.where(diff >= 0, lam ** diff.clamp(min=0), torch.zeros((), device=q.device))  # [1,H,B,B]
    state = torch.zeros(b, h, d, e, device=q.device, dtype=torch.float32)
    out = []
    for t0 in range(0, t, block):
        n = min(block, t - t0)
        qb, kb, vb = (x[:, :, t0:t0 + n].float() for x in (q, k, v))
        m = mask[..., :n, :n]
        inter = (lam ** (idx[:n] + 1).view(1, 1, -1, 1)) * (qb @ state)
        intra = ((qb @ kb.transpose(-1, -2)) * m) @ vb
        out.append((inter + intra).to(q.dtype))
        state = (lam ** n) * state + (kb * (lam ** (n - 1 - idx[:n])).view(1, 1, -1, 1)).transpose(-1, -2) @ vb
    return torch.cat(out, dim=2)


def lightning_rows(rows, t, tokens, heads=16, d=128):
    b = max(1, tokens // t)
    q, k, v = (torch.randn(b, heads, t, d, device="cuda", dtype=DTYPE).mul(d ** -0.5).requires_grad_() for _ in range(3))
    decay = torch.exp(-torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)], device="cuda"))
    do = torch.randn_like(v)

    def step():
        o = lightning_chunked(q, k, v, decay)
        torch.autograd.grad(o, (q, k, v), do)

    ms = timed(step, repeats=5, warmup=1)
    rows.append(row("forward+backward", "transnormer", True, t, ms, "torch-chunked"))  # compared by time only


def tpa_rows(rows, t, tokens, d_model=2048, heads=32, d=64, ranks=(6, 2, 2)):
    b = max(1, tokens // t)
    x = torch.randn(b, t, d_model, device="cuda", dtype=DTYPE)
    w = {n: torch.randn(o, d_model, device="cuda", dtype=DTYPE) * d_model ** -0.5 for n, o in
         (("aq", heads * ranks[0]), ("ak", heads * ranks[1]), ("av", heads * ranks[2]), ("bq", ranks[0] * d), ("bk", ranks[1] * d), ("bv", ranks[2] * d))}

    def contract(a, bf, r):
        return torch.einsum("bthr,btrd->bthd", a.view(b, t, heads, r), bf.view(b, t, r, d)) / r

    def forward():
        q = contract(x @ w["aq"].T, x @ w["bq"].T, ranks[0])
        k = contract(x @ w["ak"].T, x @ w["bk"].T, ranks[1])
        v = contract(x @ w["av"].T, x @ w["bv"].T, ranks[2])
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)

    rows.append(row("layer forward", "tpa", True, t, timed(forward), "torch-plain", attention_flops(b, heads, t, d, True)))


def linear_weights(shapes):
    """Random weights [out, in] scaled 1/sqrt(in), biases zero: shapes {name: (out, in)}."""
    return {n: torch.randn(o, i, device="cuda", dtype=DTYPE) * i ** -0.5 for n, (o, i) in shapes.items()}


def sas_rows(rows, t, tokens, d_model=2048, heads=16, d=128, sim_heads=32, sim_d=256, kernel=3):
    """variants.md §4: per token, two convolutions across heads, the width expansion of q and k, SDPA over H' heads, PEAA."""
    b = max(1, tokens // t)
    x = torch.randn(b, t, d_model, device="cuda", dtype=DTYPE)
    w = linear_weights({"q": (heads * d, d_model), "k": (heads * d, d_model), "v": (heads * d, d_model), "o": (d_model, heads * d)})
    conv = {s: (torch.randn(sim_heads, heads, kernel, device="cuda", dtype=DTYPE) * (heads * kernel) ** -0.5,
                torch.randn(sim_heads, sim_heads, kernel, device="cuda", dtype=DTYPE) * (sim_heads * kernel) ** -0.5) for s in "qkv"}
    fc = {s: linear_weights({"1": (sim_d, d), "2": (sim_d, sim_d)}) for s in "qk"}

    def simulate(s):
        h0 = (x @ w[s].T).view(b * t, heads, d)
        x1 = F.conv1d(h0, conv[s][0], padding=kernel // 2)
        out = x1 + F.conv1d(F.relu(x1), conv[s][1], padding=kernel // 2)
        if s in fc:
            y1 = out @ fc[s]["1"].T
            out = y1 + F.relu(y1) @ fc[s]["2"].T
        return out.view(b, t, sim_heads, -1).transpose(1, 2)

    def forward():
        o = F.scaled_dot_product_attention(simulate("q"), simulate("k"), simulate("v"), is_causal=True)  # [B,H',T,D]
        o = o.transpose(1, 2).reshape(b, t, sim_heads // heads, heads * d).mean(dim=2)
        return o @ w["o"].T

    flops = 2.0 * b * sim_heads * t * t * (sim_d + d) * 0.5
    rows.append(row("layer forward", "sas", True, t, timed(forward), "torch-plain", flops))


def rope_half(z, base=10000.0):
    """RoPE, variants.md's "half" style, on the last axis of z [B, T, heads, n], token t turning by position t."""
    t, n = z.shape[1], z.shape[-1]
    theta = base ** (-2.0 * torch.arange(n // 2, device="cuda", dtype=torch.float32) / n)
    angle = torch.arange(t, device="cuda", dtype=torch.float32)[:, None] * theta  # [T, n/2]
    cos, sin = angle.cos()[None, :, None, :].to(z.dtype), angle.sin()[None, :, None, :].to(z.dtype)
    z1, z2 = z[..., : n // 2], z[..., n // 2:]
    return torch.cat((z1 * cos - z2 * sin, z2 * cos + z1 * sin), dim=-1)


def mfa_rows(rows, t, tokens, d_model=4096, heads=64, d=256, q_lora=2048, eps=1e-5):
    """variants.md §8 (Step-3): a normalised low-rank query into H wide heads, one shared KV head, SDPA with enable_gqa."""
    b = max(1, tokens // t)
    x = torch.randn(b, t, d_model, device="cuda", dtype=DTYPE)
    w = linear_weights({"q_a": (q_lora, d_model), "q_b": (heads * d, q_lora), "k": (d, d_model), "v": (d, d_model), "o": (d_model, heads * d)})
    gain = torch.ones(q_lora, device="cuda", dtype=DTYPE)

    def forward():
        qa = x @ w["q_a"].T
        qa = qa * torch.rsqrt(qa.float().pow(2).mean(dim=-1, keepdim=True) + eps).to(qa.dtype) * gain
        q = rope_half((qa @ w["q_b"].T).view(b, t, heads, d))
        k = rope_half((x @ w["k"].T).view(b, t, 1, d))
        v = (x @ w["v"].T).view(b, t, 1, d)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True)
        return o.transpose(1, 2).reshape(b, t, heads * d) @ w["o"].T

    rows.append(row("layer forward", "mfa", True, t, timed(forward), "torch-plain", attention_flops(b, heads, t, d, True)))


def agent_rows(rows, tokens, c=512, heads=8, agents=49, t=3136, kernel=3):
    """variants.md §5 (non-causal, T fixed at 3136)."""
    b = max(1, tokens // t)
    d = c // heads
    x = torch.randn(b, t, c, device="cuda", dtype=DTYPE)
    w = linear_weights({"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c)})
    bias_ak = torch.zeros(heads, agents, t, device="cuda", dtype=DTYPE)
    bias_qa = torch.zeros(heads, t, agents, device="cuda", dtype=DTYPE)
    dwc = torch.randn(c, 1, kernel, device="cuda", dtype=DTYPE) * kernel ** -0.5

    def split(z):
        return z.view(b, -1, heads, d).transpose(1, 2)

    def forward():
        q, k, v = x @ w["q"].T, x @ w["k"].T, x @ w["v"].T
        a = F.adaptive_avg_pool1d(q.transpose(1, 2), agents).transpose(1, 2)
        qh, kh, vh, ah = split(q), split(k), split(v), split(a)
        va = F.scaled_dot_product_attention(ah, kh, vh, attn_mask=bias_ak)
        o = F.scaled_dot_product_attention(qh, ah, va, attn_mask=bias_qa)
        o = o.transpose(1, 2).reshape(b, t, c) + F.conv1d(v.transpose(1, 2), dwc, padding=kernel // 2, groups=c).transpose(1, 2)
        return o @ w["o"].T

    rows.append(row("layer forward", "agent", False, t, timed(forward), "torch-plain"))


def flatten_rows(rows, tokens, c=512, heads=8, t=3136, p=3, kernel=5):
    """variants.md §6 (non-causal, T fixed at 3136)."""
    b = max(1, tokens // t)
    d = c // heads
    x = torch.randn(b, t, c, device="cuda", dtype=DTYPE)
    w = linear_weights({"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c)})
    pos = torch.zeros(t, c, device="cuda", dtype=DTYPE)
    scale = torch.zeros(c, device="cuda", dtype=DTYPE)
    dwc = torch.randn(d, 1, kernel, device="cuda", dtype=DTYPE) * kernel ** -0.5

    def focus(z):
        z = (F.relu(z) + 1e-6) / F.softplus(scale)
        n = z.norm(dim=-1, keepdim=True)
        zp = z ** p
        return zp / zp.norm(dim=-1, keepdim=True) * n

    def forward():
        q, k, v = x @ w["q"].T, x @ w["k"].T + pos, x @ w["v"].T
        q, k = focus(q), focus(k)
        qh, kh, vh = (z.view(b, t, heads, d).transpose(1, 2) for z in (q, k, v))
        z = 1.0 / (qh @ kh.mean(dim=2, keepdim=True).transpose(-1, -2) + 1e-6)
        o = (qh @ (kh.transpose(-1, -2) @ vh / t)) * z
        conv = F.conv1d(vh.reshape(b * heads, t, d).transpose(1, 2), dwc, padding=kernel // 2).transpose(1, 2).reshape(b, heads, t, d)
        o = (o + conv).transpose(1, 2).reshape(b, t, c)
        return o @ w["o"].T

    rows.append(row("layer forward", "flatten", False, t, timed(forward), "torch-plain"))


def gqa_decode_rows(rows, cache_len=32768, heads=16, kv_heads=4, d=128, batch=1):
    q = torch.randn(batch, heads, 1, d, device="cuda", dtype=DTYPE)
    k = torch.randn(batch, kv_heads, cache_len, d, device="cuda", dtype=DTYPE)
    v = torch.randn_like(k)
    nbytes = 2 * k.numel() * k.element_size()
    ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), repeats=50)
    rows.append(row("decode", "gqa", True, cache_len, ms, "sdpa", nbytes=nbytes))
    src = torch.empty(1 << 28, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), repeats=50)
    rows.append(row("copy", "device-to-device", False, 0, ms, "torch", nbytes=2 * src.numel()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", type=int, default=16384, help="B·T per measurement")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--quick", action="store_true", help="two lengths only")
    a = p.parse_args()
    lengths = a.lengths[:2] if a.quick else a.lengths
    rows = []
    for t in lengths:
        for causal in (False, True):
            sdpa_rows(rows, t, a.tokens, causal)
        lightning_rows(rows, t, a.tokens)
        tpa_rows(rows, t, a.tokens)
        sas_rows(rows, t, a.tokens)
        mfa_rows(rows, t, a.tokens)
        print(f"T={t}: {len(rows)} rows", file=sys.stderr, flush=True)
    agent_rows(rows, a.tokens)
    flatten_rows(rows, a.tokens)
    gqa_decode_rows(rows)
    result = {
        "device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "rows": rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {len(rows)} rows to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
