"""How close is every handwritten backward to the numerical gradient? A table, for the record.

Runs each gradient case of ``tests/test_functional.py`` (the same builders and
the same hypothesis strategies the tests use) over many random shapes, and
prints the worst relative error ``|a - n| / max(|a| + |n|, 1e-6)`` seen for
each formula, next to the tolerance the tests assert::

    .venv/bin/python benchmarks/gradcheck_report.py            # 50 shapes per formula
    .venv/bin/python benchmarks/gradcheck_report.py --examples 200

A correct backward sits many orders of magnitude below the tolerance; the
planted bugs of ``tests/test_gradcheck.py`` sit around 1e-2 to 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_functional  # noqa: E402  (the gradient cases live with the tests that assert them)

from numpy_transformer.gradcheck import check_gradients  # noqa: E402


def worst_error(build, strategies, examples):
    """Largest relative error over ``examples`` drawn cases, and the arguments of that case."""
    worst = {"error": 0.0, "case": None, "input": None}

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(**strategies)
    def run(**kwargs):
        forward, backward, inputs, wrt = build(**kwargs)
        results = check_gradients(forward, backward, inputs, wrt=wrt, rng=np.random.default_rng([2017, 1]),
                                  raise_on_failure=False)
        for name, result in results.items():
            if result.max_rel_error >= worst["error"]:
                worst.update(error=result.max_rel_error, case=kwargs, input=name)

    run()
    return worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="random shapes per formula (default 50)")
    args = parser.parse_args(argv)

    tolerance = test_functional.TOL
    rows = []
    start = time.perf_counter()
    for formula, (functions, build, strategies) in test_functional.GRADIENT_CASES.items():
        worst = worst_error(build, strategies, args.examples)
        rows.append((formula, functions, worst))

    header = ("formula", "functions", "worst rel error", "tolerance")
    width_f = max(len(header[0]), *(len(r[0]) for r in rows))
    width_n = max(len(header[1]), *(len(r[1]) for r in rows))
    print(f"{header[0]:<{width_f}} | {header[1]:<{width_n}} | {header[2]:>15} | {header[3]:>9}")
    print(f"{'-' * width_f}-|-{'-' * width_n}-|-{'-' * 15}-|-{'-' * 9}")
    failed = False
    for formula, functions, worst in rows:
        failed |= worst["error"] > tolerance
        print(f"{formula:<{width_f}} | {functions:<{width_n}} | {worst['error']:>15.2e} | {tolerance:>9.0e}")
    print(f"\n{args.examples} random shapes per formula (hypothesis, float64, h=1e-3, 4-point stencil), "
          f"{time.perf_counter() - start:.1f} s.")
    for formula, _, worst in rows:
        print(f"  worst {formula}: input {worst['input']!r} at {worst['case']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
