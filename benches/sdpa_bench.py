#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention (FlashAttention-2 backend) on the shapes of
`polysketch bench attention --device cuda`, in the same session, and the ratio to PolySketch.

Run on the GPU machine (it has PyTorch and CUDA; see docs/src/gpu.md):

    python3 benches/sdpa_bench.py --n 4096,16384,32768,65536 --heads 12 --head-dim 64 \
        --tokens 262144 --dtype bf16 --polysketch runs/bench_gpu/attention_bench.csv

Times are medians of --reps runs between CUDA events, after one warm-up; forward+backward
backpropagates a ones gradient through the output. Peak memory is
torch.cuda.max_memory_allocated during forward+backward, inputs included. With
--polysketch, each PolySketch row of that CSV (same batch, heads, n) gets the ratio
SDPA time / PolySketch time (above 1: PolySketch is faster). Writes sdpa_bench.csv next to
--out.
"""

import argparse
import csv
import os
import statistics
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="4096,16384,32768,65536", help="sequence lengths")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--tokens", type=int, default=262144, help="batch = tokens / n")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--polysketch", help="attention_bench.csv of `bench attention --device cuda`")
    p.add_argument("--out", default="runs/bench_gpu/sdpa_bench.csv")
    p.add_argument("--backend", default="flash", choices=["flash", "efficient", "math"])
    return p.parse_args()


def timed(torch, fn, reps):
    """Median milliseconds of fn() between CUDA events (after one warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    args = parse_args()
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        sys.exit("sdpa_bench.py: no CUDA device (FlashAttention-2 runs only on the GPU)")
    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[args.backend]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, "
          f"backend {args.backend}, {args.dtype}, heads {args.heads}, h {args.head_dim}")
    print(f"{'kind':<28} {'batch':>5} {'heads':>5} {'n':>6} {'fwd ms':>10} {'fwd+bwd ms':>11} "
          f"{'tokens/s':>12} {'peak MiB':>10}")
    rows = []
    for n in [int(x) for x in args.n.split(",")]:
        batch = max(1, args.tokens // n)
        shape = (batch, args.heads, n, args.head_dim)
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            q, k, v = (torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
                       for _ in range(3))
            grad = torch.ones(shape, device=dev, dtype=dtype)
            with sdpa_kernel(backend):
                fwd = timed(torch, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                            args.reps)

                def step():
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    out.backward(grad)

                fb = timed(torch, step, args.reps)
            peak = torch.cuda.max_memory_allocated(dev)
        except RuntimeError as e:  # out of memory, or no kernel for the shape
            print(f"{'sdpa ' + args.backend:<28} {batch:>5} {args.heads:>5} {n:>6} skipped: {e}")
            continue
        tokens = batch * n / (fb / 1e3)
        print(f"{'sdpa ' + args.backend:<28} {batch:>5} {args.heads:>5} {n:>6} {fwd:>10.2f} "
              f"{fb:>11.2f} {tokens:>12.0f} {peak / 2**20:>10.1f}")
        rows.append({"kind": f"sdpa {args.backend}", "batch": batch, "heads": args.heads, "n": n,
                     "forward_s": fwd / 1e3, "forward_backward_s": fb / 1e3,
                     "tokens_per_s": tokens, "peak_bytes": peak})
        del q, k, v, grad
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["kind"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    if args.polysketch:
        sdpa = {(r["batch"], r["heads"], r["n"]): r for r in rows}
        print(f"\n{'PolySketch kind':<28} {'batch':>5} {'heads':>5} {'n':>6} "
              f"{'fwd ratio':>10} {'fwd+bwd ratio':>14} {'mem ratio':>10}")
        with open(args.polysketch) as f:
            for r in csv.DictReader(f):
                key = (int(r["batch"]), int(r["heads"]), int(r["n"]))
                if key not in sdpa:
                    continue
                s = sdpa[key]
                print(f"{r['kind']:<28} {key[0]:>5} {key[1]:>5} {key[2]:>6} "
                      f"{s['forward_s'] / float(r['forward_s']):>9.2f}x "
                      f"{s['forward_backward_s'] / float(r['forward_backward_s']):>13.2f}x "
                      f"{s['peak_bytes'] / max(1, int(r['peak_bytes'])):>9.2f}x")


if __name__ == "__main__":
    main()
