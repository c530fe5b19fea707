"""What each compression method buys: bytes on disk, parameters, accuracy, AUC, inference time.

    NUMPY_TRANSFORMER_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/compression_report.py --part table sweep \\
        --base notebooks/assets/classifier_small.npz
    NUMPY_TRANSFORMER_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/compression_report.py --part distill --teacher runs/transfer/ft_lm_small.npz

Parts (each writes benchmarks/results/compression_<part>.json; ``figure`` draws
figures/compression_accuracy_vs_size.png from whatever JSON is there):

* ``table``   every method applied to the base model (``--group``: one group of rows,
              default all of them), saved with `save_compressed`,
              reloaded from disk, evaluated on the test split (and validation),
              and timed at batch 1 and batch 64 against the float32 model in the
              same run. Fine-tunes are counted in steps (``--steps``).
* ``sweep``   magnitude pruning 0-95 % (per layer), with and without a masked
              fine-tune; and whether a 90 %-sparse matrix multiplies faster in
              NumPy (dense) or SciPy (CSR) than a dense one.
* ``distill`` a student with <= 1/4 of the teacher's parameters, trained alone,
              with soft labels (T and alpha chosen on validation) and with hard
              labels, three seeds each.
* ``timing``  inference time of every file of the table (and the student), at batch 1
              and batch 64, measured round-robin, best of ``--timing-rounds``.
* ``figure``  accuracy against file size for every method.
* ``markdown`` the table as Markdown, for the README.

Every choice is made on the validation split; the test split is only reported.
Times are CPU time of one thread (``time.process_time``), so that the load of a
shared machine does not enter them; read the ratios to the float32 row.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numpy_transformer import checkpoint                                        # noqa: E402
from numpy_transformer import compression as C                                  # noqa: E402
from numpy_transformer import transfer  # noqa: E402,F401  (registers the fine-tuned teacher's class for loading)
from numpy_transformer.data import load_corpus                                  # noqa: E402
from numpy_transformer.models import TransformerClassifier                      # noqa: E402
from numpy_transformer.tokenizer import CharTokenizer                           # noqa: E402
from numpy_transformer.train import evaluate                                    # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def nonzero_parameters(model):
    model = model.model if isinstance(model, C.Int8Classifier) else model
    return int(sum(int((p.data != 0).sum()) for p in model.parameters()))


def measure(name, path, splits, note=""):
    """Reload ``path`` from disk (as `predict` would) and measure it."""
    from numpy_transformer.cli import _load_checkpoint
    model, tok, _ = _load_checkpoint(path)
    max_len = model.config["max_len"]
    test = evaluate(model, splits["test"], tok, max_len=max_len)
    row = dict(method=name, file=str(Path(path).name), bytes=Path(path).stat().st_size,
               parameters=C.count_parameters(model), nonzero=nonzero_parameters(model),
               test_accuracy=test["accuracy"], test_auc=test["auc"], note=note)
    print(f"{name:44s} {row['bytes']:>10,d} B {row['nonzero']:>9,d} nz  test acc {row['test_accuracy']:.4f} "
          f"AUC {row['test_auc']:.4f}", flush=True)
    return row


def part_timing(args, splits):
    """Inference time of every file of the table, measured round-robin so that load changes hit all alike.

    Each round times every model once at batch 1 (``--timing-b1`` reviews) and
    once at batch 64 (``--timing-b64`` reviews); each model keeps its best round.
    The clock is this process's CPU time (one thread): on a shared machine,
    wall-clock times of identical models differed by up to 1.5x.
    """
    from numpy_transformer.cli import _load_checkpoint
    rows = all_rows()
    texts = splits["test"].texts
    models = [_load_checkpoint(Path(args.workdir) / row["file"])[:2] for row in rows]
    for model, tok in models:             # warm-up: the first pass pays for page faults and cold caches
        C.time_inference(model, tok, texts[:64], 64, model.config["max_len"])
    best = {i: [np.inf, np.inf] for i in range(len(rows))}
    for _ in range(args.timing_rounds):
        for i, (model, tok) in enumerate(models):
            max_len = model.config["max_len"]
            t1 = C.time_inference(model, tok, texts[:args.timing_b1], 1, max_len, clock=time.process_time)
            t64 = C.time_inference(model, tok, texts[:args.timing_b64], 64, max_len, clock=time.process_time)
            best[i] = [min(best[i][0], t1), min(best[i][1], t64)]
    ref = best[0]
    for i, row in enumerate(rows):
        row.update(ms_per_review_b1=best[i][0] * 1e3, s_per_1000_b64=best[i][1] * 1e3,
                   speed_b1=ref[0] / best[i][0], speed_b64=ref[1] / best[i][1])
        print(f"{row['method']:44s} b1 {row['ms_per_review_b1']:6.2f} ms/review ({row['speed_b1']:.2f}x)  "
              f"b64 {row['s_per_1000_b64']:6.2f} s/1000 ({row['speed_b64']:.2f}x)", flush=True)
    json.dump({"rows": rows, "rounds": args.timing_rounds, "b1_reviews": args.timing_b1,
               "b64_reviews": args.timing_b64}, open(RESULTS / "compression_timing.json", "w"), indent=1)


def load_base(path):
    ckpt = checkpoint.load(path)
    return ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer)


def load_table_rows():
    """The rows of every group of the table, the float32 reference first."""
    rows, extra = [], {}
    for group in TABLE_GROUPS:
        path = RESULTS / f"compression_table_{group}.json"
        if path.exists():
            data = json.load(open(path))
            rows += data["rows"]
            extra.update({k: v for k, v in data.items() if k != "rows"})
    return rows, extra


def all_rows():
    """The table's rows, then the distillation part's teacher and student (when it has run)."""
    rows, _ = load_table_rows()
    distill = RESULTS / "compression_distill.json"
    if distill.exists():
        data = json.load(open(distill))
        rows += [data[key] for key in ("teacher_row", "student_row") if key in data]
    return rows


TABLE_GROUPS = ("quantization", "pruning", "pruning_gradual_global", "pruning_long_layer", "heads", "heads_long")


def part_table(args, splits):
    """One group of rows (``--group``), so that the groups can run as separate one-thread processes."""
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    base, tok = load_base(args.base)
    max_len = base.config["max_len"]
    cfg = lambda steps, **kw: C.FinetuneConfig(steps=steps, max_len=max_len, lr=args.lr, seed=0, **kw)  # noqa: E731
    rows, info = [], {"base": str(args.base), "steps": args.steps, "binary_steps": args.binary_steps}
    t0 = time.perf_counter()
    result_path = RESULTS / f"compression_table_{args.group}.json"

    def add(name, model, note="", **save):
        path = out / (name.replace(" ", "_").replace("/", "-").replace("%", "pct").replace(",", "") + ".npz")
        if save.get("plain"):
            checkpoint.save(path, model, tokenizer=tok.to_dict())
        else:
            C.save_compressed(path, model, tok, method=name, **save)
        rows.append(measure(name, path, splits, note))
        json.dump(dict(info, rows=rows, seconds=time.perf_counter() - t0), open(result_path, "w"), indent=1)

    if args.group == "quantization":
        add("float32 (reference)", base, plain=True)
        add("int8, store int8 / compute float32", base, encoding="int8")
        add("int8, int8 x int8 -> int32 compute", base, encoding="int8", compute="int8")
        qat = copy.deepcopy(base)
        C.finetune(qat, splits["train"], tok, cfg(args.short_steps), qat="int8")
        add(f"int8 QAT ({args.short_steps} steps)", qat, encoding="int8")
        binary_enc = {n: "binary" for n, _ in C.qat_targets(base, "binary")}
        add("binary blocks, post-training", base, encoding="int8", encodings=binary_enc,
            note="block matrices 1 bit; embedding and head int8")
        binq = copy.deepcopy(base)
        C.finetune(binq, splits["train"], tok, cfg(args.binary_steps, warmup_steps=50), qat="binary")
        add(f"binary blocks, QAT ({args.binary_steps} steps)", binq, encoding="int8", encodings=binary_enc,
            note="block matrices 1 bit; embedding and head int8")
    elif args.group == "pruning":
        control = copy.deepcopy(base)
        C.finetune(control, splits["train"], tok, cfg(args.steps))
        add(f"float32 + {args.steps} more steps (control)", control, plain=True,
            note="the same fine-tune the pruned models get, without pruning")
        m = copy.deepcopy(base)
        C.apply_masks(m, C.magnitude_masks(m, 0.9))
        add("magnitude 90%, no fine-tune", m, encoding="sparse")
        masks = C.magnitude_masks(m, 0.9)
        C.finetune(m, splits["train"], tok, cfg(args.steps), masks=masks)
        add(f"magnitude 90%, masked fine-tune ({args.steps} steps)", m, encoding="sparse")
        add("magnitude 90%, masked fine-tune, int8 values", m, encoding="int8_sparse")
    elif args.group == "pruning_gradual_global":
        # Zhu & Gupta 2017: sparsity rises with the cubic schedule over 2/3 of the steps, one global threshold
        g = copy.deepcopy(base)
        steps = args.long_steps
        C.finetune(g, splits["train"], tok, C.FinetuneConfig(steps=steps, max_len=max_len, lr=args.long_lr, seed=0),
                   sparsity_schedule=lambda t: C.cubic_sparsity(t, 0.9, 0, 2 * steps // 3), scope="global")
        add(f"magnitude 90% global, gradual cubic ({steps} steps, lr {args.long_lr:g})", g, encoding="sparse")
        add("magnitude 90% global, gradual, int8 values", g, encoding="int8_sparse")
    elif args.group == "pruning_long_layer":
        m = copy.deepcopy(base)
        masks = C.magnitude_masks(m, 0.9)
        C.finetune(m, splits["train"], tok, C.FinetuneConfig(steps=args.long_steps, max_len=max_len, lr=args.long_lr,
                                                             seed=0), masks=masks)
        add(f"magnitude 90%, masked fine-tune ({args.long_steps} steps, lr {args.long_lr:g})", m, encoding="sparse")
    elif args.group == "heads_long":
        importance = C.head_importance(base, splits["valid"], tok, max_len=max_len, max_batches=20)
        remove = C.heads_to_prune(importance, 0.5)
        heads = C.prune_heads(base, remove)
        C.finetune(heads, splits["train"], tok, cfg(args.long_steps))
        add(f"50% heads removed, fine-tuned ({args.long_steps} steps)", heads, encoding="float32",
            note=f"removed {remove}")
    else:
        importance = C.head_importance(base, splits["valid"], tok, max_len=max_len, max_batches=20)
        remove = C.heads_to_prune(importance, 0.5)
        info.update(importance=importance.tolist(), removed_heads={str(k): v for k, v in remove.items()})
        heads = C.prune_heads(base, remove)
        add("50% heads removed, no fine-tune", heads, encoding="float32", note=f"removed {remove}")
        C.finetune(heads, splits["train"], tok, cfg(args.steps))
        add(f"50% heads removed, fine-tuned ({args.steps} steps)", heads, encoding="float32", note=f"removed {remove}")
        both = C.prune_ffn(C.prune_heads(base, remove), 0.5)
        C.finetune(both, splits["train"], tok, cfg(args.short_steps))
        add(f"50% heads + 50% FFN neurons, fine-tuned ({args.short_steps} steps)", both, encoding="float32")


def part_tables(args, splits):
    """``--group all``: every group in turn; else the one group."""
    for group in (TABLE_GROUPS if args.group == "all" else (args.group,)):
        part_table(argparse.Namespace(**dict(vars(args), group=group)), splits)


def part_sweep(args, splits):
    base, tok = load_base(args.base)
    max_len = base.config["max_len"]
    rows = []
    t0 = time.perf_counter()
    for sparsity in (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        m = copy.deepcopy(base)
        masks = C.magnitude_masks(m, sparsity)
        C.apply_masks(m, masks)
        before = evaluate(m, splits["test"], tok, max_len=max_len)
        C.finetune(m, splits["train"], tok, C.FinetuneConfig(steps=args.sweep_steps, max_len=max_len, lr=args.lr),
                   masks=masks)
        after = evaluate(m, splits["test"], tok, max_len=max_len)
        rows.append(dict(sparsity=sparsity, test_no_ft=before["accuracy"], test_ft=after["accuracy"],
                         auc_no_ft=before["auc"], auc_ft=after["auc"]))
        print(rows[-1], flush=True)
        json.dump({"base": str(args.base), "steps": args.sweep_steps, "rows": rows, "seconds": time.perf_counter() - t0},
                  open(RESULTS / "compression_sweep.json", "w"), indent=1)
    # does an unstructured-sparse matrix multiply faster? the FFN's first product, batch 64 x 40 tokens
    import scipy.sparse
    rng = np.random.default_rng(0)
    D, Fw = base.d_model, base.encoder.blocks[0].ffn.d_ff
    x = rng.standard_normal((64 * 40, D)).astype(np.float32)
    W = rng.standard_normal((D, Fw)).astype(np.float32)
    timing = {}
    for sparsity in (0.0, 0.9, 0.99):
        Ws = W * (rng.random(W.shape) >= sparsity)
        csr = scipy.sparse.csr_matrix(Ws.T)           # (F, D): csr @ x.T
        reps = 30
        start = time.perf_counter()
        for _ in range(reps):
            x @ Ws
        dense = (time.perf_counter() - start) / reps
        start = time.perf_counter()
        for _ in range(reps):
            csr @ x.T
        sparse = (time.perf_counter() - start) / reps
        timing[str(sparsity)] = dict(dense_ms=dense * 1e3, csr_ms=sparse * 1e3)
        print(f"sparsity {sparsity}: dense {dense * 1e3:.3f} ms, scipy CSR {sparse * 1e3:.3f} ms", flush=True)
    json.dump({"base": str(args.base), "steps": args.sweep_steps, "rows": rows, "matmul": timing,
               "matmul_shape": [64 * 40, D, Fw], "seconds": time.perf_counter() - t0},
              open(RESULTS / "compression_sweep.json", "w"), indent=1)


def part_distill(args, splits):
    """A student with <= 1/4 of the teacher's parameters: alone, with soft labels, with hard labels; 3 seeds.

    Teacher: the fine-tuned language model (``--teacher``, default
    runs/transfer/ft_lm_small.npz, made by the command in README § Transfer
    learning). Student: a bidirectional classifier of width ``--student-d``,
    ``--student-layers`` layers, the teacher's vocabulary. The training texts are
    the training split plus its `data.short_views` (the opening and closing
    clauses of long reviews, what ``--length-mix`` adds): with distillation the
    teacher labels them, which is where a student learns more than the labels
    say. Every choice (the control's data and steps, T and alpha, whether the
    clauses help) is made on validation with seed 0; then three seeds of each.
    """
    from numpy_transformer.data import with_short_views
    if not Path(args.teacher).exists():
        sys.exit(f"--teacher: {args.teacher} does not exist; make it with the fine-tuning command of README "
                 f"§ Transfer learning (benchmarks/transfer_experiments.py finetune ... --save {args.teacher})")
    teacher, tok = load_base(args.teacher)
    max_len = teacher.config["max_len"]
    t0 = time.perf_counter()
    data = {"train": splits["train"], "train + views": with_short_views(splits["train"])}
    logits = {name: C.teacher_logits(teacher, d, tok, max_len=max_len) for name, d in data.items()}
    t_test = evaluate(teacher, splits["test"], tok, max_len=max_len)
    t_valid = evaluate(teacher, splits["valid"], tok, max_len=max_len)
    print(f"teacher: {teacher.num_parameters():,} parameters, test acc {t_test['accuracy']:.4f}, "
          f"valid {t_valid['accuracy']:.4f}", flush=True)
    student_cfg = dict(d_model=args.student_d, n_heads=4, n_layers=args.student_layers, d_ff=4 * args.student_d,
                       max_len=max_len, dropout=0.1, norm="pre", pooling="mean")
    n_student = TransformerClassifier(tok.vocab_size, 2, **student_cfg).num_parameters()
    print(f"student: {n_student:,} parameters ({n_student / teacher.num_parameters():.1%} of the teacher)")
    result = {"teacher": str(args.teacher), "teacher_parameters": teacher.num_parameters(),
              "teacher_test_accuracy": t_test["accuracy"], "teacher_test_auc": t_test["auc"],
              "teacher_valid_accuracy": t_valid["accuracy"], "student": student_cfg, "student_parameters": n_student,
              "transfer_sets": {name: len(d) for name, d in data.items()}, "lr": args.distill_lr,
              "choice": [], "runs": []}
    out = RESULTS / "compression_distill.json"

    def run(mode, seed, texts, steps, temperature=2.0, alpha=0.5, save=None):
        student = TransformerClassifier(tok.vocab_size, 2, seed=seed, **student_cfg)
        cfg = C.FinetuneConfig(steps=steps, lr=args.distill_lr, warmup_steps=100, max_len=max_len, seed=seed,
                               temperature=temperature, alpha=alpha)
        C.finetune(student, data[texts], tok, cfg, teacher_logits=None if mode == "alone" else logits[texts],
                   hard_labels=mode == "hard")
        v = evaluate(student, splits["valid"], tok, max_len=max_len)
        t = evaluate(student, splits["test"], tok, max_len=max_len)   # reported, never used to choose
        row = dict(mode=mode, seed=seed, texts=texts, steps=steps, temperature=temperature, alpha=alpha,
                   valid_accuracy=v["accuracy"], test_accuracy=t["accuracy"], test_auc=t["auc"],
                   parameters=student.num_parameters())
        print(row, flush=True)
        if save:
            checkpoint.save(save, student, tokenizer=tok.to_dict())
        result["seconds"] = time.perf_counter() - t0
        return row

    def record(key, row):
        result[key].append(row)
        json.dump(result, open(out, "w"), indent=1)
        return row

    # 1. choices on validation, seed 0: the control's data and length; T and alpha of the soft labels (on the
    #    larger set), then whether the clauses help the soft-label student
    steps = args.distill_steps
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    saved = lambda texts, T, a: Path(args.workdir) / f"student_soft_{texts.replace(' + ', '_')}_T{T:g}_a{a:g}.npz"  # noqa: E731
    controls = [record("choice", run("alone", 0, texts, n)) for texts in data for n in (steps // 2, steps)]
    softs = [record("choice", run("soft", 0, "train + views", steps, T, a, save=saved("train + views", T, a)))
             for T, a in ((2.0, 0.5), (2.0, 0.9), (4.0, 0.5))]
    best_control = max(controls, key=lambda r: r["valid_accuracy"])
    best_soft = max(softs, key=lambda r: r["valid_accuracy"])
    T, a = best_soft["temperature"], best_soft["alpha"]
    soft = {"train + views": best_soft,
            "train": record("choice", run("soft", 0, "train", steps, T, a, save=saved("train", T, a)))}
    texts = max(soft.values(), key=lambda r: r["valid_accuracy"])["texts"]
    result["chosen"] = dict(control=dict(texts=best_control["texts"], steps=best_control["steps"]),
                            temperature=T, alpha=a, texts=texts)
    # 2. three seeds of each (seed 0 reused from step 1)
    for seed in (0, 1, 2):
        record("runs", best_control if seed == 0 else
               run("alone", seed, best_control["texts"], best_control["steps"]))
        record("runs", run("hard", seed, "train + views", steps))
        for name in data:
            record("runs", soft[name] if seed == 0 else run("soft", seed, name, steps, T, a))
    student_path = Path(args.workdir) / "student_soft.npz"
    shutil.copyfile(saved(texts, T, a), student_path)
    # the seed-0 soft-label student and the teacher go to the table
    result["student_row"] = measure(f"distilled student (soft, T = {T:g}, alpha = {a:g}, {texts}, seed 0)",
                                    student_path, splits)
    teacher_copy = Path(args.workdir) / "teacher.npz"
    checkpoint.save(teacher_copy, teacher, tokenizer=tok.to_dict())
    result["teacher_row"] = measure("teacher: fine-tuned lm_small (float32)", teacher_copy, splits)
    result["seconds"] = time.perf_counter() - t0
    json.dump(result, open(out, "w"), indent=1)


def part_figure(args, splits):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    table_rows = all_rows()
    fig, ax = plt.subplots(figsize=(12, 5.5))
    markers = {"float32": "o", "int8": "s", "binary": "D", "magnitude": "^", "50%": "v", "teacher": "P", "distilled": "*"}
    for i, row in enumerate(table_rows, start=1):
        key = next((k for k in markers if row["method"].startswith(k)), "o")
        ax.scatter(row["bytes"] / 1e6, row["test_accuracy"], marker=markers[key], s=60,
                   label=f"{i}. {row['method']}")
        ax.annotate(str(i), (row["bytes"] / 1e6, row["test_accuracy"]), fontsize=8, xytext=(5, 3),
                    textcoords="offset points")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ref = table_rows[0]
    ax.axhline(ref["test_accuracy"], color="grey", lw=0.8, ls="--")
    ax.axhline(ref["test_accuracy"] - 0.02, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("file size on disk (MB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Compressing the classifier: accuracy against file size\n"
                 "(dashed: float32 reference; dotted: 2 points below)")
    fig.tight_layout()
    path = ROOT / "figures" / "compression_accuracy_vs_size.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def part_markdown(args, splits):
    """Print the table as Markdown (the README's), from the JSON the other parts wrote."""
    rows = all_rows()
    timing_path = RESULTS / "compression_timing.json"
    timing = {r["method"]: r for r in json.load(open(timing_path))["rows"]} if timing_path.exists() else {}
    ref = rows[0]
    print("| method | bytes on disk | smaller | non-zero parameters | test accuracy | AUC "
          "| ms / review, batch 1 | s / 1,000 reviews, batch 64 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = timing.get(r["method"])
        b1 = f"{t['ms_per_review_b1']:.2f} ({t['speed_b1']:.2f}×)" if t else "–"
        b64 = f"{t['s_per_1000_b64']:.2f} ({t['speed_b64']:.2f}×)" if t else "–"
        print(f"| {r['method']} | {r['bytes']:,} | {ref['bytes'] / r['bytes']:.1f}× | {r['nonzero']:,} "
              f"| {r['test_accuracy']:.4f} | {r['test_auc']:.4f} | {b1} | {b64} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", choices=["table", "sweep", "distill", "timing", "figure", "markdown"], default=["table"])
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--timing-b1", type=int, default=50, help="reviews timed one at a time")
    p.add_argument("--timing-b64", type=int, default=256, help="reviews timed in batches of 64")
    p.add_argument("--base", default=str(ROOT / "notebooks" / "assets" / "classifier_small.npz"))
    p.add_argument("--teacher", default=str(ROOT / "runs" / "transfer" / "ft_lm_small.npz"),
                   help="teacher checkpoint for distill: the fine-tuned language model of README § Transfer learning")
    p.add_argument("--workdir", default=str(ROOT / "runs" / "compression"), help="where the compressed files go")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps after pruning and for int8 QAT")
    p.add_argument("--binary-steps", type=int, default=400, help="steps of binary QAT")
    p.add_argument("--long-steps", type=int, default=1000, help="steps of the longer fine-tune after removing heads")
    p.add_argument("--long-lr", type=float, default=1e-3, help="learning rate of the longer pruning fine-tunes")
    p.add_argument("--short-steps", type=int, default=150, help="steps of int8 QAT and of heads + FFN fine-tuning")
    p.add_argument("--group", choices=TABLE_GROUPS + ("all",), default="all",
                   help="which rows of the table (default all, one group after the other)")
    p.add_argument("--sweep-steps", type=int, default=200, help="masked fine-tuning steps in the sweep")
    p.add_argument("--distill-steps", type=int, default=2000, help="student training steps")
    p.add_argument("--student-d", type=int, default=48, help="student width (48, 2 layers: 20 %% of the teacher)")
    p.add_argument("--distill-lr", type=float, default=1e-3)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    splits = load_corpus()
    for part in args.part:
        {"table": part_tables, "sweep": part_sweep, "distill": part_distill, "timing": part_timing,
         "figure": part_figure, "markdown": part_markdown}[part](args, splits)


if __name__ == "__main__":
    main()
