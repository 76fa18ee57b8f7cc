"""One validation for every entry point (CLI, API, ladder), in Keras' "Received: name=value" form;
and the shape of the house: every module imports only downward, with no import circle."""
import ast
import pathlib
import subprocess
import sys

import pytest

from smallvision import api, checks, cli
from smallvision.errors import SmallvisionError

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "smallvision"


def test_errors_are_value_errors():
    assert issubclass(SmallvisionError, ValueError)


@pytest.mark.parametrize("text", ["0.7,0.3", "0.5,0.5,0.5", "a,b,c", "0,0.5,0.5"])
def test_bad_fractions(text):
    with pytest.raises(SmallvisionError, match=r"split must be three fractions .* Received: split="):
        checks.split_fractions(text)


@pytest.mark.parametrize("value, expected", [(180, (180, 180)), ("180", (180, 180)), ("180,200", (180, 200)),
                                             ("224x240", (224, 240)), ((64, 96), (64, 96))])
def test_image_sizes(value, expected):
    assert checks.image_size(value) == expected


@pytest.mark.parametrize("value", [3, "abc", (1, 2, 3), 7.5, True, "0,100"])
def test_bad_image_sizes(value):
    with pytest.raises(SmallvisionError, match=r"image-size must be SIZE or HEIGHT,WIDTH .* Received: image_size="):
        checks.image_size(value)


def test_numbers_name_the_parameter():
    with pytest.raises(SmallvisionError, match=r"^epochs must be a positive integer. Received: epochs=0$"):
        checks.check_positive("epochs", 0, integer=True)
    with pytest.raises(SmallvisionError, match=r"^batch-size must be a positive integer. Received: batch_size='8'$"):
        checks.check_positive("batch_size", "8", integer=True)
    with pytest.raises(SmallvisionError, match=r"^seed must be an integer >= 0. Received: seed=-1$"):
        checks.check_seed(-1)


def test_the_same_check_at_every_entry_point(tiny_data, tmp_path, capsys):
    """The API, the ladder and the CLI refuse a bad image size with the same words."""
    with pytest.raises(SmallvisionError, match="Received: image_size=4"):
        api.train(tiny_data, "scratch", out=tmp_path / "runs", image_size=4, progress=False)
    with pytest.raises(SmallvisionError, match="Received: image_size=4"):
        api.ladder(tiny_data, out=tmp_path / "ladder", image_size=4, progress=False)
    with pytest.raises(SystemExit):
        cli.main(["train", str(tiny_data), "--image-size", "4"])
    assert "image-size must be SIZE or HEIGHT,WIDTH in pixels, each >= 8" in capsys.readouterr().err
    for call in (lambda: api.train(tiny_data, "scratch", out=tmp_path / "runs", epochs=0, progress=False),
                 lambda: api.ladder(tiny_data, out=tmp_path / "ladder", batch_size=0, progress=False),
                 lambda: api.train(tiny_data, "scratch", out=tmp_path / "runs", split="1,1,1", progress=False)):
        with pytest.raises(SmallvisionError, match="Received: "):
            call()
    assert not (tmp_path / "runs").exists()


# -- the shape of the house ---------------------------------------------------------------------

# lower number = higher up; a module may import its own layer or any layer below it
LAYERS = {
    "cli": 0, "__main__": 0,
    "api": 1,
    "runner": 2, "inference": 2, "ladder": 2, "audit": 2, "curve": 2, "report": 2, "demo": 2, "explain.verbs": 2, "export": 2,
    "serve": 2,
    "strategies": 3, "models": 3, "backbones": 3, "explain": 3, "plots": 3,
    "runtime": 3, "deploy": 3, "distribute": 3, "mixed": 3, "fitting": 3, "novelty": 3,
    "data": 4,
    "runs": 5, "client": 5, "config": 5, "metrics": 5, "labels": 5, "labelsfile": 5, "checks": 5, "progress": 5, "_io": 5, "errors": 5,
    "__init__": 5,
}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def _layer(module):
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"module {module} has no layer in LAYERS (add it where it belongs)")


def _imports(module, path):
    """smallvision modules imported anywhere in the file (functions included)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if target else alias.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smallvision"):
            found.add(node.module[len("smallvision."):])
        elif isinstance(node, ast.Import):
            found |= {a.name[len("smallvision."):] for a in node.names if a.name.startswith("smallvision.")}
    known = {m for m, _ in _modules()}
    out = set()
    for name in found:  # "data.scan.scan" -> the module "data.scan"
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                out.add(".".join(parts[:n]))
                break
    out.discard(module)
    return out


def test_every_module_imports_only_downward_and_there_is_no_circle():
    graph = {m: _imports(m, p) for m, p in _modules()}
    upward = [(m, t) for m, ts in graph.items() for t in ts
              if _layer(t) < _layer(m) and not m.startswith(t + ".")]  # a package's own __init__ is not "up"
    assert not upward, f"imports that go up the layers: {upward}"
    # no circle between modules (a package __init__ importing its own submodules is the package's job)
    edges = {m: {t for t in ts if not t.startswith(m + ".") and not m.startswith(t + ".")} for m, ts in graph.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for t in edges.get(m, ()):
            if state.get(t) == "open":
                raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(t):] + [t])}")
            if t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in edges:
        if m not in state:
            visit(m, [m])


def test_api_is_a_facade():
    text = (SRC / "api.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    for name in api.__all__:
        assert hasattr(api, name), name


def test_the_data_verbs_start_without_loading_keras(tiny_data):
    """The API is a lazy facade: `smallvision data check` and `scan` start in well under a second
    instead of paying for TensorFlow's import (~9 s here). This is also the suite's one fresh
    import of the CLI (and so of api, errors, checks, distribute, data): an import circle that
    bites only in a fresh interpreter shows here; the static layering test above holds the rest."""
    code = ("import sys\nfrom smallvision import api, cli\n"
            "assert cli.main(['data', 'check', sys.argv[1]]) == 0\n"
            "assert cli.main(['scan', sys.argv[1]]) == 0\n"
            "loaded = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_data)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_api_reference_documents_every_verb():
    """docs/api.md renders each public name from the docstring where it is implemented (mkdocs
    build --strict in CI fails on a name that does not resolve; this fails on one left out)."""
    from smallvision.api import _EXPORTS
    text = (SRC.parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [name for name, (module, attr) in _EXPORTS.items() if f"::: smallvision.{module}.{attr}" not in text]
    missing += [name for name in ("strategies", "backbones") if name not in text.split("members:")[1].split("\n")[0]]
    assert not missing, f"add to docs/api.md: {missing}"
