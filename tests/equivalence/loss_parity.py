"""Compare the per-step losses of two decomposition runs (`run_stage.py` outputs or run directories) with a tolerance.

For changes that are meant to alter rounding only (a fused kernel, one backward pass instead of two): the two runs'
`metrics.jsonl` must agree step for step to a relative tolerance. Prints the largest relative difference per column
and exits 1 if any exceeds `--rtol`.

    python tests/equivalence/loss_parity.py /work/eq/old/decompose /work/eq/new/decompose --rtol 1e-5 --first 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LOSSES = ("stochastic_recon", "adversarial_recon", "minimality", "delta_l2", "total")


def losses_by_step(run: Path) -> dict[int, dict[str, float]]:
    "`{step: {loss: value}}` from a run's metrics.jsonl (training rows only)."
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: {k: r[k] for k in LOSSES if k in r} for r in rows if "total" in r}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--first", type=int, default=2, help="compare the first N logged steps only (0: all); later "
                   "steps part as rounding differences are amplified by training")
    args = p.parse_args(argv)
    a, b = losses_by_step(args.a), losses_by_step(args.b)
    steps = sorted(set(a) & set(b))
    steps = steps[:args.first] if args.first else steps
    if not steps:
        print("no common logged steps")
        return 1
    worst = {}
    for s in steps:
        for k in set(a[s]) & set(b[s]):
            rel = abs(a[s][k] - b[s][k]) / max(abs(a[s][k]), 1e-12)
            if rel > worst.get(k, (0.0, 0))[0]:
                worst[k] = (rel, s)
            worst.setdefault(k, (rel, s))
    print(f"{len(steps)} common steps ({steps[0]}..{steps[-1]})")
    print("| loss | max relative difference | at step |\n|---|---|---|")
    for k, (rel, s) in sorted(worst.items()):
        print(f"| {k} | {rel:.2e} | {s} |")
    bad = [k for k, (rel, _) in worst.items() if rel > args.rtol]
    print(f"RESULT: {'DIFFERENT' if bad else 'WITHIN'} rtol={args.rtol:g}" + (f" ({', '.join(bad)})" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
