"""Run a short, deterministic CPU pass of every training stage with whichever `vpd` is importable.

Usage (see README.md):

    python tests/equivalence/run_stage.py --out OUT --data DATA [--stages target,decompose,toys] [--trace]

Stages (each writes under OUT/<stage>/, and OUT/stages.json records how each went and how long it took):

* data:      build the `tiny` corpus, a 4096-token BPE and its token shards into DATA once (skipped when
             DATA/tok/shards.json exists). It is always run first, implicitly.
* shards:    train the tokenizer and tokenize DATA/corpus again with this `vpd`, into OUT/shards (opt-in),
             so that two versions' tokenizers and shards can be compared byte for byte.
* target:    vpd.target.train_target on the `tiny` preset for 40 steps (eval and save every 20, a log row per step).
* decompose: vpd.decompose.decompose_lm of that target, `tiny` preset, 30 steps (a log row per step,
             a checkpoint every 10 steps, all kept).
* evaluate:  vpd.evaluate.evaluate_run of that decomposition with a small EvalConfig (2 validation batches,
             PGD with 5 and 10 steps, 8 generated tokens) into OUT/decompose/eval.
* toys:      vpd.toys.run_toy for tms-5-2 and resid-mlp-1, 60 steps each (their targets are trained too).

With --trace, a global optimizer post-step hook appends one line per optimizer step to OUT/trace.jsonl:
the stage, the optimizer's index within the stage, its step count and a digest of its parameters. It only reads
tensors, so it does not change any number; it tells `compare.py` at which optimizer step two runs part.

Only the cadence of logging and checkpointing is set beyond the presets; every number that is trained comes
from the library's own presets and seeds.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import argparse
import dataclasses
import hashlib
import inspect
import json
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

STAGES = ("shards", "target", "decompose", "evaluate", "toys")
DEFAULT_STAGES = STAGES
TARGET_STEPS, DECOMPOSE_STEPS, TOY_STEPS = 40, 30, 60
TOYS = ("tms-5-2", "resid-mlp-1")
VOCAB = 4096


# ---------------------------------------------------------------------------------------------------------------
OPTIONAL_KWARGS = {"progress"}  # the only arguments that may be dropped: they change no number


def takes(fn, name: str) -> bool:
    "Whether `fn` accepts the keyword argument `name`."
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def call_with_accepted(fn, *args, **kwargs):
    "Call `fn`, dropping the optional keyword arguments its signature does not take; refuse to drop any other."
    dropped = sorted(k for k in kwargs if not takes(fn, k))
    lost = [k for k in dropped if k not in OPTIONAL_KWARGS]
    if lost:
        raise TypeError(f"{fn.__module__}.{fn.__name__}{inspect.signature(fn)} takes no {lost}: "
                        "adapt run_stage.py to this version (the run would not be comparable)")
    if dropped:
        print(f"  note: {fn.__module__}.{fn.__name__} takes no {dropped}; not passed", flush=True)
    return fn(*args, **{k: v for k, v in kwargs.items() if k not in dropped})


def jsonable(obj):
    "A JSON-friendly copy of a stage's return value (dataclasses as dicts, tensors and others as text)."
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name in ("summary", "meta", "config") or not hasattr(getattr(obj, f.name), "parameters")}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)[:500]


def source_revision(pkg_file: str) -> str | None:
    "The git commit (plus '+dirty') of the checkout the imported `vpd` lives in."
    root = Path(pkg_file).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "vpd"], capture_output=True,
                               text=True, timeout=30).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------------------
class Tracer:
    "Digest of every optimizer's parameters after each of its steps, one JSON line each, tagged by stage."

    def __init__(self, path: Path | None):
        self.path, self.stage, self.index, self.counts = path, None, {}, {}
        self.file = open(path, "a") if path else None
        if self.file:
            register_optimizer_step_post_hook(self.hook)

    def start(self, stage: str) -> None:
        self.stage, self.index, self.counts = stage, {}, {}

    def hook(self, opt, args, kwargs) -> None:
        if self.stage is None:
            return
        key = id(opt)
        if key not in self.index:
            self.index[key] = (len(self.index), opt)  # keep a reference: ids stay unique within the stage
        i = self.index[key][0]
        self.counts[i] = self.counts.get(i, 0) + 1
        h = hashlib.sha256()
        n = 0
        for g in opt.param_groups:
            for p in g["params"]:
                h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                n += p.numel()
        lrs = [g.get("lr") for g in opt.param_groups]
        self.file.write(json.dumps({"stage": self.stage, "opt": i, "kind": type(opt).__name__,
                                    "step": self.counts[i], "numel": n, "lr": lrs, "params": h.hexdigest()[:32]})
                        + "\n")

    def close(self) -> None:
        if self.file:
            self.file.close()


# ---------------------------------------------------------------------------------------------------------------
def ensure_data(data: Path) -> Path:
    "The token-shard directory DATA/tok, building corpus, tokenizer and shards with this `vpd` if missing."
    tok = data / "tok"
    if (tok / "shards.json").exists():
        return tok
    import vpd.data as D
    print(f"data: building the tiny corpus into {data} (package cache: {D.default_cache_dir()})", flush=True)
    t0 = time.time()
    D.build_corpus(data / "corpus", D.CORPUS_PRESETS["tiny"], progress=False)
    t1 = time.time()
    D.train_tokenizer(data / "corpus", VOCAB, tok)
    t2 = time.time()
    D.tokenize_corpus(data / "corpus", tok, progress=False)
    t3 = time.time()
    import vpd
    (data / "built_by.json").write_text(json.dumps({
        "vpd": vpd.__file__, "revision": source_revision(vpd.__file__), "corpus_s": round(t1 - t0, 1),
        "tokenizer_s": round(t2 - t1, 1), "tokenize_s": round(t3 - t2, 1)}, indent=2) + "\n")
    return tok


def stage_shards(out: Path, data: Path, tok: Path):
    "Tokenizer and shards of DATA/corpus made again with this `vpd` (for a byte-for-byte comparison)."
    import vpd.data as D
    dest = out / "shards"
    if dest.exists():
        shutil.rmtree(dest)
    call_with_accepted(D.train_tokenizer, data / "corpus", VOCAB, dest)
    return call_with_accepted(D.tokenize_corpus, data / "corpus", dest, progress=False)


def target_config():
    "The tiny target preset with 40 steps, eval and save every 20 and a log row per step."
    import vpd.target as T
    return dataclasses.replace(T.TRAIN_PRESETS["tiny"], steps=TARGET_STEPS, eval_every=20, save_every=20, log_every=1)


def stage_target(out: Path, data: Path, tok: Path):
    "Train the tiny target for 40 steps into OUT/target."
    import vpd.target as T
    return call_with_accepted(T.train_target, out / "target", tok, target_config(), progress=False)


def stage_decompose(out: Path, data: Path, tok: Path, target_dir: Path | None = None, fp32: bool = False):
    "Decompose OUT/target (or `target_dir`) with the tiny LM preset for 30 steps into OUT/decompose."
    import vpd.decompose as Dc
    overrides = {"log_every": 1, "save_every": 10, "keep_checkpoints": 10, **({"bf16": False} if fp32 else {})}
    target_dir = target_dir or out / "target"
    if takes(Dc.decompose_lm, "overrides"):  # f137ad3: preset, overrides, steps and seed are arguments
        return call_with_accepted(Dc.decompose_lm, target_dir, tok, out / "decompose", preset="tiny",
                                  overrides=overrides, steps=DECOMPOSE_STEPS, seed=0, progress=False)
    # later: the caller resolves the config (preset, then overrides) and passes it
    config = call_with_accepted(Dc.lm_config, "tiny", overrides={**overrides, "steps": DECOMPOSE_STEPS, "seed": 0})
    return call_with_accepted(Dc.decompose_lm, target_dir, tok, out / "decompose", preset="tiny", config=config,
                              progress=False)


def stage_evaluate(out: Path, data: Path, tok: Path):
    "Tables 2-4, the source curve and generations of OUT/decompose, with a small evaluation budget."
    import vpd.evaluate as E
    cfg = E.EvalConfig(n_batches=2, adv_steps=(5, 10), max_new_tokens=8, gen_adv_steps=5)
    results = call_with_accepted(E.evaluate_run, out / "decompose", cfg=cfg, device="cpu")
    return {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in results.items()}


def stage_toys(out: Path, data: Path, tok: Path):
    "run_toy for each toy, 60 steps, with its target trained in the run directory."
    import vpd.toys as Ty
    overrides = {"log_every": 1, "save_every": 15, "keep_checkpoints": 10}
    results = {}
    for name in TOYS:
        t0 = time.time()
        results[name] = call_with_accepted(Ty.run_toy, name, out / "toys" / name, steps=TOY_STEPS, progress=False,
                                           overrides=overrides)
        print(f"  {name}: {time.time() - t0:.1f}s", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory (must not hold an earlier run)")
    p.add_argument("--data", required=True, type=Path, help="shared data directory (built once if missing)")
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES), help=f"comma-separated subset of {STAGES}")
    p.add_argument("--target-dir", type=Path, help="decompose this target run instead of OUT/target")
    p.add_argument("--trace", action="store_true", help="digest the parameters after every optimizer step")
    p.add_argument("--fp32", action="store_true", help="decompose with bf16 autocast off (for a parity run against "
                                                         "a version that had no CPU bf16)")
    a = p.parse_args(argv)
    stages = [s for s in a.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {STAGES}")
    if a.out.exists() and any(a.out.iterdir()):
        p.error(f"{a.out} is not empty: the stages resume from checkpoints; give a fresh directory")
    a.out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import vpd
    info = {"vpd": vpd.__file__, "revision": source_revision(vpd.__file__), "python": sys.version.split()[0],
            "torch": torch.__version__, "platform": platform.platform(), "argv": sys.argv[1:],
            "threads": torch.get_num_threads(), "stages": {}}
    print(f"vpd from {info['vpd']} ({info['revision']})", flush=True)
    record = a.out / "stages.json"

    def save():
        record.write_text(json.dumps(info, indent=2) + "\n")

    t0 = time.time()
    tok = ensure_data(a.data)
    info["data"] = {"dir": str(a.data.resolve()), "wall_s": round(time.time() - t0, 1)}
    save()
    tracer = Tracer(a.out / "trace.jsonl" if a.trace else None)
    runners = {"shards": stage_shards, "target": stage_target, "evaluate": stage_evaluate, "toys": stage_toys,
               "decompose": lambda o, d, t: stage_decompose(o, d, t, a.target_dir, a.fp32)}
    failed = False
    for stage in [s for s in STAGES if s in stages]:
        print(f"== {stage}", flush=True)
        tracer.start(stage)
        t0 = time.time()
        try:
            result = runners[stage](a.out, a.data, tok)
            info["stages"][stage] = {"ok": True, "wall_s": round(time.time() - t0, 1), "result": jsonable(result)}
        except BaseException as e:  # record and go on: later stages may still be comparable
            failed = True
            info["stages"][stage] = {"ok": False, "wall_s": round(time.time() - t0, 1),
                                     "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            if isinstance(e, KeyboardInterrupt):
                save()
                raise
        tracer.start(None)
        print(f"   {stage}: {'ok' if info['stages'][stage]['ok'] else 'FAILED'} in "
              f"{info['stages'][stage]['wall_s']}s", flush=True)
        save()
    tracer.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
