"""The README's command-line block runs as written.

The ```bash block under "## The command line" is taken from README.md, continuation lines
joined and comments dropped. Every command in it must parse with medcap's CLI (fast test),
and the runnable ones must run, in order, in one folder, on tiny synthetic data (slow test):
the README and the CLI cannot drift apart unnoticed.

Only sizes and time budgets are changed (:data:`SUBSTITUTIONS`, :data:`APPENDED`), and a
command is left out of the run only by an explicit rule (:data:`NOT_RUN`): it needs the
licensed ROCOv2 data, it elides its options with ``...``, or it runs until stopped.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import torch_threads

README = Path(__file__).resolve().parents[1] / "README.md"

# README text -> text used here: sizes only.
SUBSTITUTIONS = {
    "--n-train 2000 --n-valid 400 --n-test 400 --size 128": "--n-train 48 --n-valid 16 --n-test 16 --size 64",
}
# Command prefix -> arguments appended: time budgets and model sizes only.
APPENDED = {
    "medcap train concepts --config demo": ["--set", "epochs=1", "--set", "max_minutes=0", "--set", "image_size=32",
                                            "--set", "progress=false"],
    "medcap train captions --config demo": ["--set", "epochs=1", "--set", "max_minutes=0", "--set", "image_size=32",
                                            "--set", "model=scratch:tiny", "--set", "eval_images=4",
                                            "--set", "eval_max_new_tokens=8", "--set", "max_new_tokens=8",
                                            "--set", "warmup_steps=0", "--set", "progress=false"],
    "medcap demo": ["--fast"],
}
APPENDED["medcap train captions --config demo-retrieval"] = APPENDED["medcap train captions --config demo"]
APPENDED["medcap train captions --config vlm-tiny"] = ["--set", "epochs=1", "--set", "max_minutes=0",
                                                       "--set", "image_size=32", "--set", "eval_images=4",
                                                       "--set", "eval_max_new_tokens=8", "--set", "max_new_tokens=8",
                                                       "--set", "warmup_steps=0", "--set", "progress=false"]
# Why a command is parsed but not run.
NOT_RUN = {
    "needs the licensed ROCOv2 data": lambda line: re.search(r"(^|\s)ROCOv2(\s|$)", line) is not None,
    "elides its options with '...'": lambda line: line.rstrip().endswith("..."),
    "runs until stopped (a web server)": lambda line: line.startswith("medcap serve"),
    "needs the network (the Hugging Face hub)": lambda line: line.startswith("medcap push"),
}


def readme_commands() -> list[str]:
    """The commands of the bash block under '## The command line', in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "README: no ```bash block under '## The command line'"
    commands: list[str] = []
    pending = ""
    for raw in block.group(1).splitlines():
        line = raw.split(" # ", 1)[0].split("  #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        commands.append(line)
    assert commands and all(c.startswith("medcap ") for c in commands), commands
    return commands


def _why_not_run(line: str) -> str | None:
    return next((why for why, rule in NOT_RUN.items() if rule(line)), None)


def _resolve(argv: list[str]):
    """The click command that ``argv`` (without 'medcap') names, and the arguments left for it."""
    import typer

    from medcap.cli import _load_commands
    from medcap.cli.app import app

    _load_commands()
    cmd, rest = typer.main.get_command(app), list(argv)
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    assert not hasattr(cmd, "commands"), f"'{' '.join(argv)}' does not name a command"
    return cmd, rest


def test_the_readme_block_has_the_commands_this_test_expects():
    commands = readme_commands()
    runnable = [c for c in commands if _why_not_run(c) is None]
    assert len(runnable) >= 18 and len(commands) - len(runnable) <= 11
    for old in SUBSTITUTIONS:  # a stale substitution would silently stop applying
        assert any(old in c for c in commands), old
    for prefix in APPENDED:
        assert any(c == prefix or c.startswith(prefix + " ") for c in commands), prefix


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_command_parses_with_the_cli(line):
    argv = shlex.split(line)[1:]
    elided = argv and argv[-1] == "..."
    if elided:
        argv = argv[:-1]
    cmd, rest = _resolve(argv)
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("-"):
            assert token.split("=", 1)[0] in known, f"{token} is not an option of '{cmd.name}': {line}"
    if not elided:  # complete commands must parse: required options present, values of the right type
        try:
            cmd.make_context(cmd.name, list(rest))
        except Exception as e:  # typer vendors click: usage errors are matched by shape, not class
            if not callable(getattr(e, "format_message", None)):
                raise
            pytest.fail(f"README command does not parse: {line}\n{e.format_message()}")


def _prepared(line: str) -> list[str]:
    for old, new in SUBSTITUTIONS.items():
        line = line.replace(old, new)
    argv = shlex.split(line)
    for prefix, extra in APPENDED.items():
        if line == prefix or line.startswith(prefix + " "):
            argv += extra
    return argv[1:]


@pytest.mark.slow
def test_the_readme_commands_run_in_order_on_tiny_data(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with torch_threads(1):  # tiny models run fastest on one thread
        for line in readme_commands():
            if _why_not_run(line) is not None:
                continue
            rc, _, err = cli(*_prepared(line))
            assert rc == 0, f"README command failed: {line}\n{err[-3000:]}"
    assert (tmp_path / "medcap-demo" / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "report.html").is_file()


# -- the Python API block ------------------------------------------------------------------------
def readme_python_block() -> str:
    """The ```python block under '## Python API'."""
    section = README.read_text(encoding="utf-8").split("\n## Python API", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block, "README: no ```python block under '## Python API'"
    return block.group(1)


def _set_values(prefix: str) -> dict:
    """The --set values APPENDED gives a CLI command, as an overrides dict (the same tiny runs)."""
    from medcap.config import parse_overrides

    extra = APPENDED[prefix]
    return parse_overrides([extra[i + 1] for i in range(len(extra) - 1) if extra[i] == "--set"])


# README text -> text used here: the time budgets only (tiny runs, as for the command-line block).
API_BUDGETS = {
    '"runs/api-concepts", {"max_minutes": 1}': lambda: f'"runs/api-concepts", '
                                                        f'{_set_values("medcap train concepts --config demo")!r}',
    '"runs/api-captions", {"max_minutes": 1}': lambda: f'"runs/api-captions", '
                                                        f'{_set_values("medcap train captions --config demo")!r}',
}


def test_the_readme_python_block_compiles_and_uses_only_the_public_api():
    import medcap

    code = readme_python_block()
    compile(code, "README.md", "exec")
    assert set(re.findall(r"\bmedcap\.(\w+)", code)) <= set(dir(medcap))
    for old in API_BUDGETS:  # a stale substitution would silently stop applying
        assert old in code, old


@pytest.mark.slow
def test_the_readme_python_block_runs_as_written_on_tiny_data(tmp_path, monkeypatch, capsys):
    from medcap.synth import SynthConfig, generate_dataset

    monkeypatch.chdir(tmp_path)
    generate_dataset(tmp_path / "synth-data", SynthConfig(n_train=48, n_valid=16, n_test=16, size=64, seed=0))
    code = readme_python_block()
    for old, new in API_BUDGETS.items():
        code = code.replace(old, new())
    with torch_threads(1):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "<ImageCLEFDataset" in out and "'image-1'" in out and "primary_f1" in out
    assert (tmp_path / "api-concepts.csv").is_file()
