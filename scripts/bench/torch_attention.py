#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention (bf16, causal) on the shapes of
scripts/bench/bench_gpu_kernels.cpp: forward, and forward + backward, timed the same way (the median
over 5 runs of 10 calls after 3 of warm-up, the host timing around a device synchronisation). One
JSON object a line, with the keys bench_gpu_kernels prints for attention."""
import json
import statistics
import time

import torch
import torch.nn.functional as F


def time_ms(call, warmup=3, iters=10, repeats=5):
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            call()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) * 1e3 / iters)
    return statistics.median(runs)


def main():
    for seq in (1024, 4096):
        for head_dim in (64, 128):
            batch, heads = 16384 // seq, 2048 // head_dim
            # SDPA's layout is [batch, heads, seq, head_dim].
            q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16,
                                   requires_grad=True) for _ in range(3))
            dout = torch.randn_like(q)

            def forward():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def forward_backward():
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out.backward(dout)

            fwd_ms, both_ms = time_ms(forward), time_ms(forward_backward)
            fwd_flop = 4.0 * batch * heads * head_dim * seq * seq / 2
            print(json.dumps({"bench": "attention", "batch": batch, "seq": seq, "heads": heads,
                              "head_dim": head_dim, "fwd_ms": fwd_ms, "fwd_bwd_ms": both_ms,
                              "fwd_tflops": fwd_flop / (fwd_ms * 1e9),
                              "fwd_bwd_tflops": 3.5 * fwd_flop / (both_ms * 1e9)}), flush=True)


if __name__ == "__main__":
    main()
