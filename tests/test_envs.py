"""The conda envs under envs/ (issue 7, point 3), checked without reaching conda's channels.

Every rule that runs code names an env that exists; every package is pinned exactly; the pins
satisfy pyproject.toml and agree across envs (but numpy, which vLLM holds below 2.4 for
inference); the env of each rule holds every third-party package its code imports; the inference env's pip
lock (envs/inference.pip-lock.txt, the full PyPI closure) agrees with the env file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
ENV_NAMES = ("data", "inference", "analysis")

# conda-forge names whose PyPI (import-metadata) name differs.
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch"}
# Not Python distributions, or the installer itself: no counterpart in pyproject.toml.
NOT_PYPI = {"python", "pip"}
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
            assert set(dep) == {"pip"} and dep["pip"], f"envs/{name}.yaml: {dep} is not a list under `pip:`"
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


def pyproject_requirements() -> dict[str, Requirement]:
    """pyproject.toml's dependencies and optional dependencies, by normalized name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalize(req.name): req for req in map(Requirement, requirements)}


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
    wf = api.workflow(resource_settings=ResourceSettings(cores=2), config_settings=ConfigSettings(),
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
    """Every env pin satisfies pyproject.toml: equal to an exact pin, inside a range."""
    project = pyproject_requirements()
    mismatches = []
    for name in ENV_NAMES:
        for package, (version, _) in env_pins(name).items():
            if package in NOT_PYPI or package not in project:
                continue
            if not project[package].specifier.contains(version, prereleases=True):
                wanted = project[package]
                mismatches.append(f"envs/{name}.yaml pins {package} {version}; pyproject.toml: {wanted}")
    assert not mismatches, "\n".join(mismatches)
    # The inference env runs the vLLM engine at the release pyproject.toml names.
    assert project["vllm"].specifier.contains(env_pins("inference")["vllm"][0])


def test_envs_agree_with_each_other():
    """A package pinned in two envs has one version, except numpy, which vLLM holds below 2.4."""
    versions: dict[str, set[str]] = {}
    for name in ENV_NAMES:
        for package, (version, _) in env_pins(name).items():
            versions.setdefault(package, set()).add(version)
    split = sorted(package for package, found in versions.items() if len(found) > 1)
    assert split == ["numpy"], f"packages pinned at different versions across envs: {split}"


def test_inference_pins_are_what_vllm_allows():
    """vLLM 0.32.0's bounds (its metadata, and mistral_common's for numpy on Python 3.11)."""
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
SRC = ROOT / "src"


def file_imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, optional) of every import in a file, those inside functions too.

    `optional` marks imports inside a `try` that catches ImportError: the code copes without them.
    `from X import y` yields X and X.y (y may be a submodule).
    """
    tree = ast.parse(path.read_text())
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = []
            for handler in node.handlers:
                kind = handler.type
                caught += [kind] if isinstance(kind, ast.Name) else list(getattr(kind, "elts", []))
            if any(getattr(n, "id", "") in ("ImportError", "ModuleNotFoundError") for n in caught):
                optional |= {id(n) for part in node.body for n in ast.walk(part)}
    # The package a relative import starts from: a module's parent, or an __init__'s own package.
    package = ".".join(path.relative_to(SRC).parts[:-1]) if path.is_relative_to(SRC) else ""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in optional) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, id(node) in optional))
            found += [(f"{module}.{alias.name}", id(node) in optional) for alias in node.names]
    return found


def module_path(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_imports(scripts: list[Path], extra: tuple[str, ...] = ()) -> set[str]:
    """Top-level third-party modules the scripts need: their imports, followed through the library.

    Static (no import runs), so packages of another env (vllm) are seen without being installed.
    """
    todo = [(module, False) for module in extra]
    for script in scripts:
        todo += file_imports(script)
    seen: set[str] = set()
    needed: set[str] = set()
    while todo:
        module, optional = todo.pop()
        top = module.split(".")[0]
        if optional or module in seen or not top:
            continue
        seen.add(module)
        if top not in ("sparse_frontier", "kernels"):
            if top not in sys.stdlib_module_names:
                needed.add(top)
            continue
        path = module_path(module)
        if path is None:
            continue  # a name imported from a module, not a module
        parts = module.split(".")
        for i in range(2, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            todo.append((".".join(parts[:i]), False))
        todo += file_imports(path)
        for registry in REGISTRIES:
            if module == registry or module.startswith(registry + "."):
                folder = SRC.joinpath(*registry.split("."))
                todo += [(f"{registry}.{p.stem}", False) for p in folder.glob("*.py") if p.stem != "__init__"]
    return needed


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_holds_what_its_rules_import(name, rule_envs):
    """Every third-party package the code of the rules naming this env imports is in the env."""
    env_file = f"envs/{name}.yaml"
    scripts = sorted({ROOT / script for env, script, _ in rule_envs.values() if env == env_file})
    assert scripts, f"no rule uses {env_file}"
    extra = ENGINE_MODULES if any(s.name == "inference.py" for s in scripts) else ()
    distributions = importlib.metadata.packages_distributions()
    needed = {normalize((distributions.get(m) or [m])[0]) for m in third_party_imports(scripts, extra)}
    for package, implied in IMPLICIT.items():
        if package in needed:
            needed |= implied
    # triton ships with torch's wheel (and the kernels fall back to their references without it).
    needed.discard("triton")
    missing = sorted(needed - set(env_pins(name)))
    assert not missing, f"{env_file} lacks {missing}, imported by {[s.name for s in scripts]}"


def test_import_scan_sees_the_library_and_skips_optional_imports():
    """The scan itself: the inference script reaches torch through the library and vllm through its
    engine; the analysis scripts do not reach vllm (it is imported only when chosen)."""
    scripts = ROOT / "workflow" / "scripts"
    inference = third_party_imports([scripts / "inference.py"], ENGINE_MODULES)
    assert {"torch", "pandas", "vllm"} <= inference
    assert "vllm" not in third_party_imports([scripts / "evaluate.py"])
