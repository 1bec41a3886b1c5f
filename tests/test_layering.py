"""The package's layering: each module imports only from modules earlier in the notebook order, never a
private name of another module, and the data/target modules load without any decomposition code."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ORDER = ["core", "method", "config", "runs", "train", "toys", "data", "target", "decompose", "evaluate", "own_model", "harvest", "labels", "browse", "attention", "graphview", "circuits", "edit",
         "pipeline", "cli", "__main__"]
PACKAGE = Path(__file__).resolve().parent.parent / "vpd"


def vpd_imports(module: str) -> list[tuple[str, str]]:
    "`(imported module, imported name)` for every import of a vpd module in `vpd/<module>.py` (name '' for `import x`)."
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = f"vpd.{source}" if source else "vpd"
            if source.startswith("vpd"):
                found += [(source, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("vpd")]
    return found


@pytest.mark.parametrize("module", ORDER)
def test_imports_only_earlier_modules_and_public_names(module):
    for source, name in vpd_imports(module):
        if source == "vpd":
            assert name in ("", "__version__"), f"vpd.{module} imports {name} from the package root; import it from its module"
            continue
        other = source.removeprefix("vpd.")
        assert other in ORDER, f"vpd.{module} imports {source}, which is not in the layering order {ORDER}"
        assert ORDER.index(other) < ORDER.index(module), f"vpd.{module} imports vpd.{other}, which comes later"
        assert not name.startswith("_"), f"vpd.{module} imports the private name {name} of {source}"


def test_every_module_is_in_the_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "_modidx"}
    assert modules == set(ORDER), f"add new modules to ORDER in their notebook order: {sorted(modules ^ set(ORDER))}"


@pytest.mark.parametrize("module", ["vpd.data", "vpd.target"])
def test_data_and_target_load_no_decomposition_code(module):
    code = f"import sys, {module}; assert 'vpd.train' not in sys.modules, sorted(m for m in sys.modules if m.startswith('vpd'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr


def test_top_level_names_resolve():
    import vpd
    import vpd.cli, vpd.decompose, vpd.evaluate, vpd.pipeline  # importing submodules must not shadow a name
    for name in vpd.__all__:
        assert getattr(vpd, name).__name__ == name
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert not modules & set(vpd.__all__), "a top-level name that is also a module name gets shadowed on import"
