"""Worker of tests/test_ddp_decompose.py: tiny decompositions, each process training on its rows of a global batch.

`python ddp_decompose_worker.py OUT` is the single-process reference on the whole global batch;
`torchrun --nproc_per_node 2 ddp_decompose_worker.py OUT` runs the same on two gloo ranks with half the rows each.
Every run writes its run directory under OUT (`ppgd`, `shared`, and with several ranks `resume`: the `ppgd` run
interrupted by SIGTERM on rank 1 only, then resumed, each rank writing `interrupted_rank{r}.txt`); each rank also
writes `minimality_rank{r}.pt`, and with several ranks `threads_rank{r}.txt`, its thread names after the group is destroyed."""
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from vpd.method import minimality_loss, mse, stochastic_recon
from vpd.config import from_dict
from vpd.runs import TrainingInterrupted
from vpd.train import DecompositionConfig, decompose

GLOBAL_BATCH, D = 8, 6
# fp32: bf16 matrix products round differently at the two ranks' half batches than at the whole batch
BASE = {"steps": 10, "divergence": "mse", "bf16": False, "stochastic_routing": "uniform_k_subset", "layerwise_coeff": 1.0,
        "delta_l2_coeff": 1.0, "faithfulness_warmup_steps": 2, "log_every": 5, "save_every": 5, "eval_every": 5,
        "ci": {"kind": "mlp", "hidden": [4]},
        "minimality": {"coeff": 1e-2, "beta": 0.5, "p_start": 2.0, "p_end": 1.0},
        "components_optimizer": {"lr": 1e-2}, "ci_optimizer": {"lr": 1e-2},
        "adversary": {"coeff": 0.5, "n_warmup": 1, "lr": 0.05, "routing": "uniform_k_subset"}}
SCOPES = {"ppgd": "per_batch_per_position", "shared": "shared_across_batch"}


class GlobalBatches:
    "This rank's rows of a deterministic sparse global batch per step; resumable. Sends SIGTERM to itself on request."

    def __init__(self, rank: int, world: int, sigterm_at: int | None = None):
        self.rank, self.world, self.sigterm_at, self.drawn = rank, world, sigterm_at, 0
        self.g = torch.Generator().manual_seed(0)

    def __iter__(self):
        b = GLOBAL_BATCH // self.world
        while True:
            x = torch.rand(GLOBAL_BATCH, D, generator=self.g)
            x = x * (torch.rand(GLOBAL_BATCH, D, generator=self.g) < 0.4)
            self.drawn += 1
            if self.drawn == self.sigterm_at:
                signal.raise_signal(signal.SIGTERM)
            yield x[self.rank * b:(self.rank + 1) * b]

    def state_dict(self):
        return {"g": self.g.get_state()}

    def load_state_dict(self, state):
        self.g.set_state(state["g"])


def target() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 5), nn.ReLU(), nn.Linear(5, D))


def eval_fn(trainer) -> float:
    "An evaluation that draws random numbers (rank 0 only, as the trainer runs it)."
    x = torch.rand(4, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, inputs = trainer.cm.target_forward(x)
        ci = {n: torch.rand(4, trainer.cm.C[n]) for n in trainer.cm.names}
        return stochastic_recon(trainer.cm, x, out, ci, trainer.cm.weight_deltas(), mse).item()


def run(run_dir: Path, scope: str, rank: int, world: int, sigterm_at: int | None = None):
    config = from_dict(DecompositionConfig, {**BASE, "adversary": {**BASE["adversary"], "scope": scope}})
    return decompose(target(), {"0": 4, "2": 4}, lambda m, x: m(x), GlobalBatches(rank, world, sigterm_at), config,
                     run_dir, eval_fn=eval_fn, progress=False)


def minimality_check(out: Path, rank: int, world: int) -> None:
    "Minimality and its (rank-averaged) gradient for a shared parameter, on this rank's rows of a fixed batch."
    b = GLOBAL_BATCH // world
    x = torch.randn(GLOBAL_BATCH, 3, 5, generator=torch.Generator().manual_seed(2))[rank * b:(rank + 1) * b]
    w = nn.Parameter(torch.linspace(-1.0, 1.0, 5))
    g = torch.sigmoid(x * w)
    loss = minimality_loss({"a": g, "b": g[..., :3] ** 2}, p=0.7, beta=0.5)
    loss.backward()
    if world > 1:
        dist.all_reduce(w.grad)
        w.grad /= world
    torch.save({"loss": loss.detach(), "grad": w.grad}, out / f"minimality_rank{rank}.pt")


def thread_names() -> list[str]:
    "Names of this process's threads (Linux): gloo's are `pt_gloo_runloop` and `gloo_tcp_loop` while its group lives."
    tasks = Path("/proc/self/task")
    return sorted((tasks / t / "comm").read_text().strip() for t in os.listdir(tasks))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    if "LOCAL_RANK" in os.environ:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    minimality_check(out, rank, world)
    for name, scope in SCOPES.items():
        run(out / name, scope, rank, world)
    if world > 1:
        try:
            run(out / "resume", SCOPES["ppgd"], rank, world, sigterm_at=4 if rank == 1 else None)
        except TrainingInterrupted as e:
            (out / f"interrupted_rank{rank}.txt").write_text(str(e))
            run(out / "resume", SCOPES["ppgd"], rank, world)
        dist.destroy_process_group()
        (out / f"threads_rank{rank}.txt").write_text("\n".join(thread_names()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
