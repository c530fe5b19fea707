"""numpy_transformer's training step against PyTorch eager's, measured on this machine, taking turns.

    python benchmarks/compare_pytorch.py --torch-python /path/to/venv-with-torch/bin/python

PyTorch is not a dependency of this project: give the Python of a separate
environment that has it (for example ``python -m venv /tmp/tv &&
/tmp/tv/bin/pip install torch numpy``, a CPU build). Each round times
``--steps`` of our steps in this process (`bench_step.train_step`, the
`default` configuration), then runs `pytorch_reference.py` once in that
environment (its own warm-up, then ``--steps`` steps), so that both see the
machine in the same state. A shared machine drifts; the rounds show by how
much. Prints each round's two medians and their ratio, and writes the JSON to
``benchmarks/results/pytorch_comparison-<threads>threads[-dropout<p>][-attention-dropout].json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_step  # noqa: E402  (imports numpy_transformer before NumPy, see parallel.py)
import numpy as np  # noqa: E402


def ours(model, params, optimizer, batch, steps):
    ids, mask, labels = batch
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        bench_step.train_step(model, params, optimizer, ids, mask, labels)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def pytorch(python, threads, dropout, steps, attention_dropout):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "torch.json"
        cmd = [python, str(HERE / "pytorch_reference.py"), "--threads", str(threads), "--dropout", str(dropout),
               "--steps", str(steps), "--json", str(out)]
        if not attention_dropout:
            cmd.append("--no-attention-dropout")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--torch-python", required=True, help="a Python interpreter that can import torch")
    p.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and side (default 20)")
    p.add_argument("--attention-dropout", action="store_true",
                   help="both drop attention weights too, with the same p (PyTorch's layer does by default; "
                        "our models only with attention_dropout > 0)")
    args = p.parse_args(argv)

    cfg = bench_step.CONFIGS["default"]
    cfg = bench_step.Config(**{**bench_step.asdict(cfg), "dropout": args.dropout,
                               "attention_dropout": args.dropout if args.attention_dropout else 0.0})
    rows = []
    with bench_step.blas_threads(args.threads):
        model, params, optimizer = bench_step.build(cfg)
        batch = bench_step.synthetic_batch(cfg)
        ours(model, params, optimizer, batch, 5)                                  # warm-up
        print(f"default config (B={cfg.B} T={cfg.T} D={cfg.D} H={cfg.H} L={cfg.L} F={cfg.F}), dropout "
              f"{args.dropout}, {args.threads} threads; attention-weight dropout on both sides: {args.attention_dropout}")
        print(f"{'round':>5} {'ours (ms)':>10} {'PyTorch (ms)':>13} {'ratio':>6}")
        for r in range(args.rounds):
            ours(model, params, optimizer, batch, 3)           # wake the threads up again after PyTorch's turn
            mine = float(np.median(ours(model, params, optimizer, batch, args.steps)))
            theirs = pytorch(args.torch_python, args.threads, args.dropout, args.steps, args.attention_dropout)
            torch_ms = float(np.median(theirs["step_ms"]))
            rows.append({"ours_ms": mine, "pytorch_ms": torch_ms, "ratio": mine / torch_ms})
            print(f"{r + 1:>5} {mine:>10.1f} {torch_ms:>13.1f} {mine / torch_ms:>6.2f}")
    ratios = [row["ratio"] for row in rows]
    print(f"ratio (ours / PyTorch): median {np.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}"
          f"  (torch {theirs['torch']}, numpy_transformer threads: {bench_step.parallel.get_num_threads()}, "
          f"OpenBLAS idle threads sleep soon: {bench_step.parallel.blas_threads_sleep_soon()})")
    name = "pytorch_comparison" + (f"-{args.threads}thread{'s' if args.threads > 1 else ''}"
                                   + ("" if args.dropout == 0.1 else f"-dropout{args.dropout:g}")
                                   + ("-attention-dropout" if args.attention_dropout else ""))
    path = bench_step.RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": bench_step.blas_info(), "torch": theirs["torch"], "threads": args.threads,
                                "dropout": args.dropout, "attention_dropout_both": args.attention_dropout,
                                "steps_per_round": args.steps, "rounds": rows,
                                "median_ratio": float(np.median(ratios))}, indent=1) + "\n")
    print(f"wrote {path.relative_to(bench_step.ROOT)}")


if __name__ == "__main__":
    main()
