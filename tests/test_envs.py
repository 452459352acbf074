"""The conda envs under envs/ (issue 7, point 3), checked without reaching conda's channels.

Every rule that runs code names an env that exists; every package is pinned exactly; the pins
agree with pyproject.toml (except where vLLM forces otherwise, listed below with the reason);
the env of each rule holds every third-party package its code imports; the inference env's pip
lock (envs/inference.pip-lock.txt, the full PyPI closure) agrees with the env file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
ENV_NAMES = ("data", "inference", "analysis")

# conda-forge names whose PyPI (import-metadata) name differs.
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch"}
# Not Python distributions, or the installer itself: no counterpart in pyproject.toml.
NOT_PYPI = {"python", "pip"}
# vLLM 0.32.0's own bounds (from its metadata and mistral_common's, resolved with pip; see the
# header of envs/inference.pip-lock.txt) force these below pyproject.toml's pins.
VLLM_FORCED = {
    ("inference", "transformers"): "vllm 0.32.0 requires transformers>=5.16.1,<5.20",
    ("inference", "numpy"): "mistral_common (vllm dependency) requires numpy<2.4 on Python <= 3.12",
}
CONDA_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+) =(?P<version>\d+(?:\.\d+){1,3}(?:\.post\d+)?)$")
PIP_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\d+(?:\.\d+)+(?:\.post\d+)?(?:\+\w+)?)$")


def normalize(name: str) -> str:
    """PEP 503 name, so PyYAML and pyyaml, vl_convert and vl-convert compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_env(name: str) -> dict:
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def env_pins(name: str) -> dict[str, tuple[str, str]]:
    """{pypi name: (version, 'conda' | 'pip')} of one env file; fails on any inexact entry."""
    pins: dict[str, tuple[str, str]] = {}
    for dep in load_env(name)["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"envs/{name}.yaml: unexpected mapping {dep}"
            for line in dep["pip"]:
                match = PIP_PIN.match(line)
                assert match, f"envs/{name}.yaml: pip entry '{line}' is not an exact `name==version` pin"
                pins[normalize(match["name"])] = (match["version"], "pip")
            continue
        match = CONDA_PIN.match(dep)
        assert match, f"envs/{name}.yaml: '{dep}' is not an exact `name =version` pin"
        pypi = CONDA_TO_PYPI.get(match["name"], match["name"])
        pins[normalize(pypi)] = (match["version"], "conda")
    return pins


def pyproject_pins() -> dict[str, str]:
    """Exact (==) pins of pyproject.toml's dependencies and optional dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = {}
    for req in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$", req)
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


@pytest.fixture(scope="module")
def rule_envs() -> dict[str, tuple[str | None, str | None]]:
    """{rule: (env file relative to the repo, script relative to the repo)} of the default workflow."""
    code = f"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                      StorageSettings)
root = Path({str(ROOT)!r})
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                      storage_settings=StorageSettings(), snakefile=root / "Snakefile", workdir=root)
    wf.dag(DAGSettings())
    out = {{}}
    for rule in wf._workflow.rules:
        base = Path(rule.snakefile).parent
        env = str((base / rule.conda_env).resolve().relative_to(root)) if rule.conda_env else None
        script = str((base / rule.script).resolve().relative_to(root)) if rule.script else None
        out[rule.name] = [env, script, bool(rule.script or rule.shellcmd)]
print("RULES=" + json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RULES="))
    return {name: tuple(v) for name, v in json.loads(line[len("RULES="):]).items()}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_file_is_conda_forge_and_exactly_pinned(name):
    env = load_env(name)
    assert env["channels"] == ["conda-forge", "nodefaults"], f"envs/{name}.yaml: use conda-forge only"
    pins = env_pins(name)  # asserts exactness entry by entry
    assert "python" in pins and pins["python"][0].startswith("3.11."), "pin Python 3.11.x exactly"
    assert len(pins) >= 5


def test_every_rule_with_code_names_an_existing_env(rule_envs):
    with_code = {rule: v for rule, v in rule_envs.items() if v[2]}
    assert "inference" in with_code and "task_data" in with_code
    for rule, (env, _script, _) in with_code.items():
        assert env is not None, f"rule {rule} names no conda env"
        assert (ROOT / env).is_file(), f"rule {rule} names {env}, which does not exist"
        assert Path(env).stem in ENV_NAMES, f"rule {rule}: {env} is not one of {ENV_NAMES} under envs/"


def test_pins_agree_with_pyproject():
    project = pyproject_pins()
    mismatches = []
    for name in ENV_NAMES:
        for package, (version, _) in env_pins(name).items():
            if package in NOT_PYPI or package not in project:
                continue
            wanted = project[package]
            if wanted.endswith(".*"):  # e.g. vllm==0.32.*: the env pins one release of that series
                agrees = version.startswith(wanted[:-1])
            else:
                agrees = version == wanted.split("+")[0]
            if not agrees and (name, package) not in VLLM_FORCED:
                mismatches.append(f"envs/{name}.yaml pins {package} {version}, pyproject.toml {wanted}")
            if agrees and (name, package) in VLLM_FORCED:
                mismatches.append(f"envs/{name}.yaml: {package} agrees now; drop it from VLLM_FORCED")
    assert not mismatches, "\n".join(mismatches)
    # The inference env runs the vLLM engine at the version pyproject.toml names.
    assert env_pins("inference")["vllm"][0].startswith(project.get("vllm", "0.32.0").rstrip("*").rstrip("."))


def test_forced_pins_are_what_vllm_allows():
    """The two departures from pyproject.toml sit inside vLLM 0.32.0's bounds (a real bug if not)."""
    pins = env_pins("inference")
    transformers = tuple(int(x) for x in pins["transformers"][0].split("."))
    numpy = tuple(int(x) for x in pins["numpy"][0].split("."))
    assert (5, 16, 1) <= transformers < (5, 20)
    assert numpy < (2, 4)


def test_inference_pip_lock_agrees_with_env_file():
    lock_path = ENVS / "inference.pip-lock.txt"
    lock = {}
    for line in lock_path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and "*" not in version, f"{lock_path.name}: '{line}' is not an exact pin"
        Version(version)  # a PEP 440 version (pre-releases such as 0.66b2 included), or InvalidVersion
        lock[normalize(name)] = version
    assert len(lock) > 50, "the lock should hold vLLM's whole dependency closure"
    for package, (version, _) in env_pins("inference").items():
        if package in NOT_PYPI:
            continue
        locked = lock.get(package)
        assert locked == version, f"{lock_path.name} has {package} {locked}, the env file {version}"


# What pandas and altair load lazily, by name, when asked to: not visible as imports.
IMPLICIT = {"pandas": {"pyarrow"}, "altair": {"vl-convert-python"}}
# Packages whose modules are looked up by name at run time (registries) or chosen by config.
REGISTRIES = ("sparse_frontier.tasks", "sparse_frontier.attention")
ENGINE_MODULES = ("sparse_frontier.engines.hf", "sparse_frontier.engines.vllm")

IMPORT_PROBE = r"""
import ast, importlib, importlib.metadata, importlib.util, json, pkgutil, sys
from pathlib import Path

root = Path(sys.argv[1]); scripts = json.loads(sys.argv[2]); extra = json.loads(sys.argv[3])
registries = json.loads(sys.argv[4])
sys.path.insert(0, str(root / "src"))

def imports(path):
    # (top-level name, optional) of every import in a file, nested ones too; `optional` when it
    # sits in a try whose handler catches ImportError (the code copes without the package).
    tree = ast.parse(Path(path).read_text())
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            names = []
            for handler in node.handlers:
                t = handler.type
                names += [t] if isinstance(t, ast.Name) else list(getattr(t, "elts", []))
            if any(getattr(n, "id", "") in ("ImportError", "ModuleNotFoundError") for n in names):
                optional |= {id(n) for part in node.body for n in ast.walk(part)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], id(node) in optional
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], id(node) in optional

def ours(module):
    return module in ("sparse_frontier", "kernels")

wanted = set(extra)
for script in scripts:
    for node in ast.walk(ast.parse(Path(script).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparse_frontier"):
            wanted.add(node.module)
for module in sorted(wanted):
    try:
        importlib.import_module(module)
    except ImportError as err:  # a package of another env (vllm here): seen below through the AST
        print("unimportable", module, err, file=sys.stderr)
for package in registries:
    if package in sys.modules:
        for info in pkgutil.iter_modules(sys.modules[package].__path__, package + "."):
            importlib.import_module(info.name)
files = set(scripts)
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if "/sparse_frontier/" in path or path.startswith(str(root)):
        files.add(path)
for module in extra:
    spec = importlib.util.find_spec(module)
    if spec and spec.origin:
        files.add(spec.origin)
        if spec.submodule_search_locations:
            for sub in Path(spec.origin).parent.rglob("*.py"):
                files.add(str(sub))
needed = {name for f in files for name, optional in imports(f)
          if not optional and not ours(name) and name not in sys.stdlib_module_names}
dists = importlib.metadata.packages_distributions()
print(json.dumps(sorted({(dists.get(name) or [name])[0] for name in needed})))
"""


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_holds_what_its_rules_import(name, rule_envs):
    """Imports the code of every rule naming this env and lists the third-party packages it uses."""
    env_file = f"envs/{name}.yaml"
    scripts = sorted({str(ROOT / script) for env, script, _ in rule_envs.values() if env == env_file})
    assert scripts, f"no rule uses envs/{name}.yaml"
    extra = list(ENGINE_MODULES) if any("inference.py" in s for s in scripts) else []
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(ROOT), json.dumps(scripts), json.dumps(extra),
         json.dumps(list(REGISTRIES))],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    needed = {normalize(d) for d in json.loads(done.stdout.splitlines()[-1])}
    for package, implied in IMPLICIT.items():
        if package in needed:
            needed |= implied
    # triton ships inside torch's wheel (and the kernels fall back to their references without it).
    needed.discard("triton")
    missing = sorted(needed - set(env_pins(name)))
    assert not missing, f"envs/{name}.yaml lacks {missing}, imported by {[Path(s).name for s in scripts]}"
