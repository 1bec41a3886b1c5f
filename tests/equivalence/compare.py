"""Compare two output directories of `run_stage.py` number for number.

Usage:  python tests/equivalence/compare.py A B [--strict] [--show N]

* `*.safetensors`: every tensor with torch.equal (dtype and shape included).
* `state.pt`: nested dicts/lists are flattened to key paths; tensors with torch.equal, numbers exactly; keys
  present on one side only are reported (not counted as differences).
* `metrics.jsonl`: rows are merged per step; every numeric column except wall-time columns compared exactly;
  the first differing step is reported.
* `*.json`, `*.yaml`: numbers except wall times compared exactly; differing strings (paths) are reported only.
* `trace.jsonl` (from --trace): the parameter digest after every optimizer step; the first step that parts.
* other files of the token shards (`*.bin`, `tokenizer.json`): byte for byte.

Exit status 1 on any numeric difference, on a stage that failed on either side, or (with --strict) on files
present on one side only; 0 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

TIME_KEY = re.compile(r"^(seconds|seconds_per_step|time|elapsed|duration|created|timestamp|\w*_seconds|\w*_s|"
                      r"wall_s\w*)$")
SKIP = {"stages.json", "built_by.json"}          # harness records: read for stage status, not compared


def is_time_key(path: str) -> bool:
    "Whether a (dotted) key names a wall-clock quantity."
    return bool(TIME_KEY.match(path.rsplit(".", 1)[-1].split("[")[0]))


def flatten(obj, prefix: str = "") -> dict:
    "Nested dicts/lists/tuples as `{dotted.path: leaf}`."
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: obj}
    return {prefix: obj}


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def same_number(a, b) -> bool:
    "Exact equality, NaN equal to NaN."
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


class Report:
    "Per-file counts of identical and different items, and the detail lines."

    def __init__(self, show: int):
        self.rows, self.details, self.show = [], [], show
        self.numeric_diffs = self.failed_stages = self.one_sided = 0

    def file(self, rel: str, kind: str, same: int, diff: list[str], notes: list[str] = ()):
        self.rows.append((rel, kind, same, len(diff), "; ".join(notes)[:120]))
        self.numeric_diffs += len(diff)
        if diff:
            self.details.append(f"--- {rel}: {len(diff)} different")
            self.details += [f"    {d}" for d in diff[:self.show]]
            if len(diff) > self.show:
                self.details.append(f"    … {len(diff) - self.show} more")

    def note(self, line: str):
        self.details.append(line)

    def print(self):
        w = max([len(r[0]) for r in self.rows] + [4])
        print(f"{'file'.ljust(w)}  {'kind':10} {'identical':>9} {'different':>9}  notes")
        for rel, kind, same, ndiff, notes in self.rows:
            flag = "  <-- DIFFERENT" if ndiff else ""
            print(f"{rel.ljust(w)}  {kind:10} {same:9d} {ndiff:9d}  {notes}{flag}")
        if self.details:
            print("\n".join([""] + self.details))


# ---------------------------------------------------------------------------------------------------------------
def cmp_tensor(a, b) -> str | None:
    "None when equal, else a short description of the difference."
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"dtype/shape {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    if torch.equal(a, b):
        return None
    if a.is_floating_point():
        d = (a.double() - b.double()).abs()
        return f"max |diff| {d.max().item():.3g} ({int((d > 0).sum())}/{a.numel()} elements)"
    return f"{int((a != b).sum())}/{a.numel()} elements differ"


def cmp_safetensors(pa: Path, pb: Path):
    a, b = load_file(pa), load_file(pb)
    same, diff, notes = 0, [], []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            notes.append(f"{k} only in {'A' if k in a else 'B'}")
            continue
        d = cmp_tensor(a[k], b[k])
        if d is None:
            same += 1
        else:
            diff.append(f"{k}: {d}")
    return same, diff, notes


def cmp_leaves(a: dict, b: dict, tensors: bool = True):
    "Compare two flattened structures: tensors and numbers must match, others are noted."
    same, diff, notes = 0, [], []
    only = [k for k in sorted(set(a) ^ set(b))]
    if only:
        notes.append(f"{len(only)} keys on one side only: " + ", ".join(
            f"{k}({'A' if k in a else 'B'})" for k in only[:6]) + ("…" if len(only) > 6 else ""))
    for k in sorted(set(a) & set(b), key=str):
        x, y = a[k], b[k]
        if is_time_key(k):
            continue
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            d = cmp_tensor(x, y)
        elif is_number(x) and is_number(y):
            d = None if same_number(x, y) else f"{x!r} vs {y!r}"
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or is_number(x) or is_number(y):
            d = f"type {type(x).__name__} vs {type(y).__name__}"
        else:
            if x != y:
                notes.append(f"{k}: {str(x)[:40]!r} vs {str(y)[:40]!r}")
            continue
        if d is None:
            same += 1
        else:
            diff.append(f"{k}: {d}")
    return same, diff, notes


def cmp_state(pa: Path, pb: Path):
    a = flatten(torch.load(pa, weights_only=False, map_location="cpu"))
    b = flatten(torch.load(pb, weights_only=False, map_location="cpu"))
    return cmp_leaves(a, b)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def by_step(rows: list[dict]) -> dict:
    "`{step: {column: [values in order]}}` of flattened metric rows, wall-time columns left out."
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for k, v in flatten(r).items():
            if k != "step" and not is_time_key(k):
                out[r.get("step")][k].append(v)
    return out


def cmp_metrics(pa: Path, pb: Path):
    a, b = by_step(read_jsonl(pa)), by_step(read_jsonl(pb))
    same, diff, notes = 0, [], []
    steps_only = sorted(set(a) ^ set(b), key=lambda s: (s is None, s))
    if steps_only:
        notes.append(f"steps on one side only: {steps_only[:8]}")
    cols_only = set()
    first = None
    for s in sorted(set(a) & set(b), key=lambda s: (s is None, s)):
        cols_only |= set(a[s]) ^ set(b[s])
        for k in sorted(set(a[s]) & set(b[s])):
            x, y = a[s][k], b[s][k]
            if len(x) != len(y):
                diff.append(f"step {s} {k}: {len(x)} vs {len(y)} values")
                continue
            for u, v in zip(x, y):
                if is_number(u) and is_number(v):
                    if same_number(u, v):
                        same += 1
                    else:
                        diff.append(f"step {s} {k}: {u!r} vs {v!r}")
                        first = s if first is None else first
                elif u != v:
                    notes.append(f"step {s} {k}: {u!r} vs {v!r}")
    if cols_only:
        notes.append(f"columns on one side only: {sorted(cols_only)[:8]}")
    if first is not None:
        notes.insert(0, f"first differing step {first}")
    return same, diff, notes


def cmp_structured(pa: Path, pb: Path):
    load = (lambda p: yaml.safe_load(p.read_text())) if pa.suffix in (".yaml", ".yml") else \
        (lambda p: json.loads(p.read_text()))
    return cmp_leaves(flatten(load(pa)), flatten(load(pb)))


def cmp_trace(pa: Path, pb: Path):
    "Per stage and optimizer, the parameter digests after each step; reports where each first parts."
    def group(rows):
        out = defaultdict(list)
        for r in rows:
            out[(r["stage"], r["opt"])].append(r)
        return out
    a, b = group(read_jsonl(pa)), group(read_jsonl(pb))
    same, diff, notes = 0, [], []
    for key in sorted(set(a) | set(b), key=str):
        if key not in a or key not in b:
            notes.append(f"{key[0]} optimizer {key[1]} only in {'A' if key in a else 'B'}")
            continue
        ra, rb = a[key], b[key]
        if len(ra) != len(rb):
            diff.append(f"{key[0]} optimizer {key[1]} ({ra[0]['kind']}): {len(ra)} vs {len(rb)} steps")
        for x, y in zip(ra, rb):
            if (x["numel"], x["params"], x["lr"]) == (y["numel"], y["params"], y["lr"]):
                same += 1
            else:
                what = "lr" if x["params"] == y["params"] else "parameters"
                diff.append(f"{key[0]} optimizer {key[1]} ({x['kind']}, {x['numel']} params): {what} first differ "
                            f"after step {x['step']} (lr {x['lr']} vs {y['lr']})")
                break
    return same, diff, notes


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cmp_bytes(pa: Path, pb: Path):
    return (1, [], []) if sha(pa) == sha(pb) else (0, [f"bytes differ ({pa.stat().st_size} vs {pb.stat().st_size})"], [])


def comparer(rel: Path):
    "(kind, function) for a relative path, or None for files that are not compared."
    name = rel.name
    if name in SKIP or name.endswith((".log", ".png", ".tmp", ".lock", ".csv")):  # the CSVs repeat results.json
        return None
    if name.endswith(".safetensors"):
        return "tensors", cmp_safetensors
    if name == "state.pt":
        return "state", cmp_state
    if name == "trace.jsonl":
        return "trace", cmp_trace
    if name.endswith(".jsonl") and rel.parts[0] != "shards":
        return "metrics", cmp_metrics
    if rel.parts[0] == "shards" or name.endswith(".bin"):
        return "bytes", cmp_bytes
    if name.endswith((".json", ".yaml", ".yml")):
        return "structured", cmp_structured
    return "bytes", cmp_bytes


def stage_status(a: Path, b: Path, report: Report) -> None:
    "Report each stage's outcome and wall time on both sides; a stage that failed on either side fails."
    recs = [json.loads((d / "stages.json").read_text()) if (d / "stages.json").exists() else {} for d in (a, b)]
    print(f"A: {recs[0].get('vpd')} {recs[0].get('revision')}\nB: {recs[1].get('vpd')} {recs[1].get('revision')}\n")
    stages = list(dict.fromkeys(list(recs[0].get("stages", {})) + list(recs[1].get("stages", {}))))
    print(f"{'stage':10} {'A':>12} {'B':>12}")
    for s in stages:
        cells = []
        for r in recs:
            st = r.get("stages", {}).get(s)
            cells.append("absent" if st is None else f"{'ok' if st['ok'] else 'FAILED'} {st['wall_s']:.0f}s")
            if st is not None and not st["ok"]:
                report.failed_stages += 1
                report.note(f"stage {s} failed in {r.get('vpd')}: {st['error'][:300]}")
        print(f"{s:10} {cells[0]:>12} {cells[1]:>12}")
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compare two run_stage.py output directories number for number.")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--strict", action="store_true", help="also fail on files present on one side only")
    p.add_argument("--show", type=int, default=8, help="difference lines shown per file")
    args = p.parse_args(argv)
    report = Report(args.show)
    stage_status(args.a, args.b, report)
    files = {d: {f.relative_to(d) for f in d.rglob("*") if f.is_file()} for d in (args.a, args.b)}
    for rel in sorted(files[args.a] | files[args.b], key=str):
        how = comparer(rel)
        if how is None:
            continue
        if rel not in files[args.a] or rel not in files[args.b]:
            report.one_sided += 1
            report.rows.append((str(rel), "MISSING", 0, 0, f"only in {'A' if rel in files[args.a] else 'B'}"))
            continue
        kind, fn = how
        try:
            same, diff, notes = fn(args.a / rel, args.b / rel)
        except Exception as e:  # an unreadable file is a difference
            same, diff, notes = 0, [f"could not compare: {type(e).__name__}: {e}"], []
        report.file(str(rel), kind, same, diff, notes)
    report.print()
    bad = report.numeric_diffs or report.failed_stages or (args.strict and report.one_sided)
    print(f"\nRESULT: {'DIFFERENT' if bad else 'IDENTICAL'} — {report.numeric_diffs} numeric differences, "
          f"{report.failed_stages} failed stages, {report.one_sided} files on one side only")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
