"""The same training step in PyTorch eager mode, for the comparison in issue 6.

Not part of the project's dependencies: run it in a separate environment that has
PyTorch (CPU build), e.g. ``python -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy``,
then ``/tmp/tv/bin/python benchmarks/pytorch_reference.py --threads 2``.

Model: embedding x sqrt(D) + sinusoidal PE, L pre-LN encoder layers (PyTorch's
TransformerEncoderLayer, ReLU, dropout in the same places as ours plus on the
attention weights), masked-mean pooling, a linear head, cross-entropy, gradient
clipping and AdamW: the shapes and work of `bench_step.py --config default`.
"""

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--json", help="also write the step times (ms) to this file")
    p.add_argument("--no-attention-dropout", action="store_true",
                   help="no dropout on the attention weights, like numpy_transformer's model")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, T, D, H, L, F, V, C = 32, 128, 128, 4, 2, 512, 3702, 2

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            pos = torch.arange(T).float()[:, None]
            div = torch.exp(torch.arange(0, D, 2).float() * (-math.log(10000.0) / D))
            pe = torch.zeros(T, D)
            pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
            self.register_buffer("pe", pe)
            self.drop = nn.Dropout(a.dropout)
            layer = nn.TransformerEncoderLayer(D, H, F, a.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, L, norm=nn.LayerNorm(D), enable_nested_tensor=False)
            if a.no_attention_dropout:
                for block in self.encoder.layers:
                    block.self_attn.dropout = 0.0      # the float that MultiheadAttention passes on
            self.head = nn.Linear(D, C)

        def forward(self, ids, mask):
            x = self.drop(self.embed(ids) * math.sqrt(D) + self.pe[: ids.shape[1]])
            h = self.encoder(x, src_key_padding_mask=~mask)
            m = mask[..., None].float()
            return self.head((h * m).sum(1) / m.sum(1))

    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(5, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.bool)
    labels = torch.randint(0, C, (B,))
    times = []
    for i in range(5 + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"PyTorch {torch.__version__} eager, {a.threads} threads, dropout {a.dropout}"
          f"{' (none on the attention weights)' if a.no_attention_dropout else ''}: "
          f"median {1000 * statistics.median(times):.1f} ms, p10 {1000 * times[len(times) // 10]:.1f}, "
          f"p90 {1000 * times[9 * len(times) // 10]:.1f} ms per step (B={B}, T={T})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": a.threads, "dropout": a.dropout,
                       "attention_dropout": not a.no_attention_dropout, "step_ms": [1000 * t for t in times]}, f)


if __name__ == "__main__":
    main()
