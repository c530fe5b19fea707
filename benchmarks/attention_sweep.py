"""The cost of one attention layer as the sequence grows: time and memory against T.

    python benchmarks/attention_sweep.py                 # T = 64 ... 1024, writes figures/attention_cost.png
    python benchmarks/attention_sweep.py --threads 1 --T 64 128 256

For each T, one forward and backward of scaled dot-product attention over
(B, H, T, Dh) queries, keys and values (float32, a padding mask), three ways:

* ``plain``  `functional.scaled_dot_product_attention`, the teaching version;
* ``fast``   `fast.scaled_dot_product_attention_fast`, the one the model runs;
* ``tiled``  `tiled_attention.tiled_attention`, keys in blocks with the online softmax;
* ``local``  `local_attention.local_attention`, a sliding window of ``--window``
  keys each side (the long-text chapter), only the key blocks inside the band.

The long-text figure (T up to 4096, w = 128, the full attention's T² against
the band's T·w)::

    python benchmarks/attention_sweep.py --threads 1 --B 1 --H 4 --kinds fast tiled local \\
        --T 64 128 256 512 1024 2048 4096 --repeats 3 \\
        --figure figures/attention_cost_local.png --json benchmarks/results/attention_sweep_local.json

For ``local`` the script also checks, at every T, that its output equals the
fast attention with the band mask (`functional.local_attention_mask`): the
largest difference in float32 is printed and saved.

Time is the median over repeats (wall clock). Memory is the peak that
tracemalloc sees during forward + backward, above what the inputs already
hold: the (B, H, T, T) scores and weights make it grow as T² for the first
two, while the tiled version holds only (B, H, T, block) at a time: linear in T.
The JSON goes to benchmarks/results/attention_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numpy_transformer import functional as F                                   # noqa: E402
from numpy_transformer import fast                                             # noqa: E402
from numpy_transformer.tiled_attention import tiled_attention, tiled_attention_backward   # noqa: E402
from numpy_transformer.local_attention import local_attention, local_attention_backward   # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_step import blas_info, blas_threads                                   # noqa: E402


def make_inputs(B, H, T, Dh, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v, dout = (rng.standard_normal((B, H, T, Dh)).astype(np.float32) for _ in range(4))
    lengths = np.maximum(1, T - rng.integers(0, T // 4 + 1, size=B))             # a little padding per row
    mask = F.padding_mask(np.arange(T)[None, :] < lengths[:, None])             # (B, 1, 1, T)
    return q, k, v, mask, dout


WINDOW = 128   # keys each side of a query for ``local`` (set by --window)


def step(kind, inputs, block_size):
    """One forward and backward of the chosen attention."""
    q, k, v, mask, dout = inputs
    if kind == "local":
        _, cache = local_attention(q, k, v, WINDOW, mask=mask, block_size=block_size)
        return local_attention_backward(dout, cache)
    if kind == "plain":
        _, _, cache = F.scaled_dot_product_attention(q, k, v, mask)
        return F.scaled_dot_product_attention_backward(dout, cache)
    if kind == "fast":
        _, _, cache = fast.scaled_dot_product_attention_fast(q, k, v, mask)
        return fast.scaled_dot_product_attention_fast_backward(dout, cache)
    _, cache = tiled_attention(q, k, v, mask, block_size)
    return tiled_attention_backward(dout, cache)


def peak_bytes(kind, inputs, block_size):
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    step(kind, inputs, block_size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base


def seconds(kind, inputs, block_size, repeats):
    step(kind, inputs, block_size)                                               # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(kind, inputs, block_size)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = np.array(results["T"], dtype=float)
    styles = {"plain": ("tab:red", "o", "plain (teaching) attention"),
              "fast": ("tab:blue", "s", "fast attention (the model's)"),
              "tiled": ("tab:green", "^", f"tiled, online softmax (block {results['block_size']})"),
              "local": ("tab:purple", "D", f"local, window {results.get('window')} each side (blocked)")}
    styles = {kind: style for kind, style in styles.items() if kind in results["ms"]}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.4))
    for kind, (color, marker, label) in styles.items():
        ax_t.loglog(Ts, results["ms"][kind], marker=marker, color=color, label=label)
        ax_m.loglog(Ts, np.array(results["peak_bytes"][kind]) / 2**20, marker=marker, color=color, label=label)
    full = "plain" if "plain" in results["ms"] else "fast"
    for ax, values in ((ax_t, results["ms"][full]), (ax_m, np.array(results["peak_bytes"][full]) / 2**20)):
        ref = values[-1] * (Ts / Ts[-1]) ** 2
        ax.loglog(Ts, ref, ":", color="gray", label="∝ T²")
    linear = "tiled" if "tiled" in results["ms"] else "local"
    linear_mem = np.array(results["peak_bytes"][linear]) / 2**20
    ax_m.loglog(Ts, linear_mem[-1] * Ts / Ts[-1], "--", color="gray", label="∝ T")
    B, H, Dh = results["B"], results["H"], results["Dh"]
    ax_t.set(xlabel="sequence length T", ylabel="forward + backward time (ms)",
             title=f"time of one attention layer (B={B}, H={H}, Dh={Dh})")
    ax_m.set(xlabel="sequence length T", ylabel="peak memory above the inputs (MiB)",
             title="memory of one attention layer (tracemalloc)")
    for ax in (ax_t, ax_m):
        ax.set_xticks(Ts, [str(int(t)) for t in Ts])
        ax.minorticks_off()
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Attention costs T²: the (T, T) scores. Tiling the keys keeps the memory linear"
                 + ("; a local window makes time linear too." if "local" in results["ms"] else "."), fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--Dh", type=int, default=32)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--window", type=int, default=128, help="keys each side of a query for local (default 128)")
    p.add_argument("--kinds", nargs="+", choices=["plain", "fast", "tiled", "local"],
                   default=["plain", "fast", "tiled", "local"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (default: the library's own setting)")
    p.add_argument("--figure", default=str(ROOT / "figures" / "attention_cost.png"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "attention_sweep.json"))
    args = p.parse_args(argv)

    global WINDOW
    WINDOW = args.window
    kinds = tuple(args.kinds)
    results = {"B": args.B, "H": args.H, "Dh": args.Dh, "block_size": args.block_size, "T": args.T,
               "window": args.window, "ms": {k: [] for k in kinds}, "peak_bytes": {k: [] for k in kinds},
               "local_vs_masked_max_abs_diff": []}
    with blas_threads(args.threads):
        results["machine"] = blas_info()
        print(f"one attention layer, forward + backward, float32, B={args.B} H={args.H} Dh={args.Dh}, "
              f"tiled block {args.block_size}")
        width = 9 * len(kinds)
        print(f"{'T':>6s} | {'time (ms)':^{width}s} | {'peak memory (MiB)':^{width}s} | scores (B,H,T,T)")
        print(f"{'':>6s} | " + "".join(f"{k:>9s}" for k in kinds) + " | " + "".join(f"{k:>9s}" for k in kinds) + " |")
        for T in args.T:
            inputs = make_inputs(args.B, args.H, T, args.Dh)
            for kind in kinds:
                results["peak_bytes"][kind].append(peak_bytes(kind, inputs, args.block_size))
                results["ms"][kind].append(seconds(kind, inputs, args.block_size, args.repeats) * 1e3)
            ms = [results["ms"][k][-1] for k in kinds]
            mb = [results["peak_bytes"][k][-1] / 2**20 for k in kinds]
            scores_mb = args.B * args.H * T * T * 4 / 2**20
            line = f"{T:>6d} | " + "".join(f"{x:9.1f}" for x in ms) + " | " + "".join(f"{x:9.1f}" for x in mb)
            line += f" | {scores_mb:7.1f} MiB"
            if "local" in kinds:           # the same outputs as the full attention with the band mask
                q, k, v, mask, _ = inputs
                band = F.local_attention_mask(T, args.window) & mask
                ref, _, _ = fast.scaled_dot_product_attention_fast(q, k, v, band)
                got, _ = local_attention(q, k, v, args.window, mask=mask, block_size=args.block_size)
                results["local_vs_masked_max_abs_diff"].append(float(np.abs(got - ref).max()))
                line += f" | local - masked {results['local_vs_masked_max_abs_diff'][-1]:.1e}"
            print(line)
    if "local" in kinds:
        full = "plain" if "plain" in kinds else "fast" if "fast" in kinds else None
        if full:
            results["full_over_local_at_largest_T"] = {
                "time": results["ms"][full][-1] / results["ms"]["local"][-1],
                "memory": results["peak_bytes"][full][-1] / results["peak_bytes"]["local"][-1]}
            r = results["full_over_local_at_largest_T"]
            print(f"  at T={args.T[-1]}: {full} / local = {r['time']:.1f}x the time, {r['memory']:.1f}x the memory")
    for kind in kinds:
        mem = results["peak_bytes"][kind]
        growth = np.polyfit(np.log(args.T), np.log(mem), 1)[0] if len(args.T) > 1 else float("nan")
        results.setdefault("memory_exponent", {})[kind] = float(growth)
        print(f"  {kind:6s} memory grows as T^{growth:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    plot(results, Path(args.figure))
    print(f"  wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
