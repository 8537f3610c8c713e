"""The ``napari-clickseg`` command line dispatcher."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from napari_clickseg import cli


def console_script() -> list[str]:
    """The installed console script, or ``python -m`` when the venv's bin is not on PATH."""
    exe = Path(sys.executable).with_name("napari-clickseg")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("napari-clickseg")
    return [found] if found else [sys.executable, "-m", "napari_clickseg.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*console_script(), *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0, res.stderr
    assert "usage: napari-clickseg" in res.stdout
    for name in cli.COMMANDS:
        assert name in res.stdout


def test_python_m_help():
    res = subprocess.run(
        [sys.executable, "-m", "napari_clickseg.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and "napari-clickseg" in res.stdout


def test_help_does_not_import_torch_or_qt():
    code = (
        "import sys\nfrom napari_clickseg import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'napari', 'PyQt6', 'qtpy'}\n"
        "print(sorted(heavy))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_unknown_subcommand_errors():
    res = run_cli("frobnicate")
    assert res.returncode == 2
    assert "invalid choice: 'frobnicate'" in res.stderr


def test_unknown_subcommand_in_process(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def fake_command(monkeypatch):
    """Register a ``fake`` subcommand backed by an in-memory module."""
    mod = types.ModuleType("napari_clickseg_fake_command")
    calls = []

    def add_arguments(p):
        p.add_argument("--value", type=int, default=1)
        p.add_argument("--fail", choices=["value", "file", "other"])

    def run(args):
        calls.append(args)
        if args.fail == "value":
            raise ValueError("bad value given")
        if args.fail == "file":
            raise FileNotFoundError("no such file: x.tif")
        if args.fail == "other":
            raise RuntimeError("boom")
        return args.value

    mod.add_arguments, mod.run = add_arguments, run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(cli.COMMANDS, "fake", (mod.__name__, "a fake command"))
    return calls


def test_dispatch_passes_arguments_and_exit_code(fake_command):
    assert cli.main(["fake"]) == 1
    assert cli.main(["fake", "--value", "0"]) == 0
    assert cli.main(["fake", "--value", "3"]) == 3
    assert [a.value for a in fake_command] == [1, 0, 3]


@pytest.mark.parametrize("kind, message", [("value", "bad value given"), ("file", "no such file: x.tif")])
def test_user_errors_become_exit_2_with_message(fake_command, capsys, kind, message):
    assert cli.main(["fake", "--fail", kind]) == 2
    err = capsys.readouterr().err
    assert f"napari-clickseg fake: error: {message}" in err


def test_programming_errors_are_not_swallowed(fake_command):
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["fake", "--fail", "other"])


def test_subcommand_options_are_validated(fake_command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fake", "--value", "notanint"])
    assert e.value.code == 2
    assert not fake_command


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(name):
    module = cli.COMMANDS[name][0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not written yet")
    res = run_cli(name, "--help")
    assert res.returncode == 0, res.stderr
    assert f"napari-clickseg {name}" in res.stdout
