"""adVersarial Parameter Decomposition (VPD): decompose a network's weight matrices into rank-1 subcomponents.

The names below are the ones a user needs; each is imported from its module on first use, so `import vpd` (and
`vpd --help`) stays fast and importing one module does not pull in the others. The one-call entry point for any
model is `vpd.train.decompose` (not re-exported here: `vpd.decompose` is the language-model module). The modules, in the order of
the notebooks: `vpd.core`, `vpd.method`, `vpd.config`, `vpd.runs`, `vpd.train`, `vpd.toys`, `vpd.data`,
`vpd.target`, `vpd.decompose`, `vpd.evaluate`, `vpd.own_model`, `vpd.harvest`, `vpd.labels`, `vpd.browse`,
`vpd.attention`, `vpd.graphview`, `vpd.circuits`, `vpd.edit`, `vpd.pipeline`, `vpd.cli`.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "ComponentModel": "vpd.core", "find_sites": "vpd.core",
    "ConfigError": "vpd.config",
    "CheckpointError": "vpd.runs", "RunLocked": "vpd.runs", "TrainingInterrupted": "vpd.runs",
    "DecompositionConfig": "vpd.train", "Decomposition": "vpd.train", "load_decomposition": "vpd.train",
    "run_toy": "vpd.toys", "load_toy": "vpd.toys",
    "TargetTrainConfig": "vpd.target", "train_target": "vpd.target", "load_target": "vpd.target",
    "decompose_lm": "vpd.decompose", "load_lm_decomposition": "vpd.decompose",
    "evaluate_run": "vpd.evaluate",
    "harvest_run": "vpd.harvest",
    "graph_for_prompt": "vpd.circuits",
    "rewrite_subcomponent": "vpd.edit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    "Import `name` from its module on first use."
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vpd' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
