#!/usr/bin/env python3
"""The PyTorch half of benches/gpu-check.sh: times the same cases as xkern-bench's wgpu
rows with PyTorch on CUDA, in the same session on the same GPU, and prints one table of
ratios (PyTorch's median over xkern's: > 1 means xkern is faster).

Inputs: the cases file xkern-bench ran (`--cases`) and its JSON lines (`--xkern`). Each
case is rebuilt with the same shapes and dtype (random normal inputs; only time is
compared here, accuracy is xkern-bench's own column). CUDA time comes from CUDA events
around each repetition after three warm-up runs, the median of at least `--reps` runs.
xkern's time is its GPU time from timestamp queries (`gpu_time_s`, the start to the end
of each op's compute pass) where xkern-bench measured one, else its wall-clock median
(`median_s`, which adds submission and the wait); the table shows both.

`--xkern-only` prints the xkern side without importing torch (a smoke test where there is
no GPU); otherwise a missing torch or CUDA is an error, not a silent skip.
"""
import argparse
import json
import math
import statistics
import sys


def load_cases(path):
    with open(path) as f:
        return json.load(f)


def load_xkern(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if str(r.get("backend", "")).startswith("wgpu"):
                    rows[r["id"]] = r
    return rows


def torch_case(torch, case):
    """A zero-argument function running the case on CUDA, and its useful FLOPs / bytes."""
    F = torch.nn.functional
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[case["dtype"]]
    p = case["params"]
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=dev, dtype=torch.float32).to(dt)

    if case["op"] == "matmul":
        b, m, k, n = p.get("batch", 1), p["m"], p["k"], p["n"]
        a = randn(b, m, k)
        w = randn(b, n, k).transpose(1, 2) if p.get("trans_b") else randn(b, k, n)
        return (lambda: torch.matmul(a, w)), 2.0 * b * m * n * k
    if case["op"] == "attention":
        b, hq, hk = p["batch"], p["q_heads"], p["kv_heads"]
        sq, skv, d = p["q_seq"], p["kv_seq"], p["head_dim"]
        q, k, v = randn(b, hq, sq, d), randn(b, hk, skv, d), randn(b, hk, skv, d)
        if hq != hk:
            # GQA by repeating K/V heads (the repeat is outside the timed function).
            k = k.repeat_interleave(hq // hk, dim=1)
            v = v.repeat_interleave(hq // hk, dim=1)
        causal = bool(p.get("causal"))
        if causal and sq != skv:
            raise SystemExit(f"{case['id']}: PyTorch's is_causal is top-left aligned; use Sq = Skv")
        # Useful FLOPs: causal counts the visible half (as xkern-bench does).
        pairs = sq * skv if not causal else sq * (sq + 1) / 2
        return (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)), 4.0 * b * hq * pairs * d
    if case["op"] == "reduce":
        x = randn(*p["shape"])
        axis, kind = p.get("axis"), p["kind"]
        nbytes = x.numel() * x.element_size()
        if kind == "softmax":
            return (lambda: torch.softmax(x, dim=axis)), 2 * nbytes
        if kind == "sum":
            return ((lambda: x.sum()) if axis is None else (lambda: x.sum(dim=axis))), nbytes
        raise SystemExit(f"{case['id']}: no PyTorch equivalent written for reduce kind {kind}")
    raise SystemExit(f"{case['id']}: unknown op {case['op']}")


def time_cuda(torch, fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def rate(case, work, seconds):
    if seconds is None or seconds <= 0 or work is None:
        return "–"
    if case["op"] == "reduce":
        return f"{work / seconds / 1e9:.0f} GB/s"
    return f"{work / seconds / 1e12:.1f} TFLOP/s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument("--xkern", required=True, help="xkern-bench --json output")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--xkern-only", action="store_true")
    args = ap.parse_args()
    cases = load_cases(args.cases)
    xk = load_xkern(args.xkern)
    torch = None
    if not args.xkern_only:
        try:
            import torch as _torch
        except ImportError:
            sys.exit("gpu-check: PyTorch is not installed here (use --xkern-only for a smoke test)")
        if not _torch.cuda.is_available():
            sys.exit("gpu-check: PyTorch sees no CUDA device")
        torch = _torch
        print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    header = f"{'case':40} {'xkern wall':>11} {'xkern gpu':>11} {'rate':>14} {'PyTorch CUDA':>13} {'rate':>14} {'PyTorch/xkern':>14}"
    print(header)
    print("-" * len(header))
    missing = 0
    for case in cases:
        row = xk.get(case["id"])
        if row is None:
            missing += 1
        wall = row.get("median_s") if row else None
        xs = (row.get("gpu_time_s") or wall) if row else None
        xwork = None
        if row:
            xwork = row.get("bytes") if case["op"] == "reduce" else row.get("flops")
        ts, twork = None, None
        if torch is not None:
            fn, twork = torch_case(torch, case)
            ts = time_cuda(torch, fn, args.reps)
        ratio = f"{ts / xs:.2f}×" if xs and ts else "–"
        wms = f"{wall * 1e3:.3f} ms" if wall else "MISSING"
        gms = f"{row['gpu_time_s'] * 1e3:.3f} ms" if row and row.get("gpu_time_s") else "–"
        tms = f"{ts * 1e3:.3f} ms" if ts else "–"
        print(f"{case['id']:40} {wms:>11} {gms:>11} {rate(case, xwork, xs):>14} {tms:>13} {rate(case, twork, ts):>14} {ratio:>14}")
    if missing:
        sys.exit(f"gpu-check: {missing} case(s) have no xkern wgpu row")


if __name__ == "__main__":
    main()
