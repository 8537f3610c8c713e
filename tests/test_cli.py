"""The ``napari-clickseg`` command line dispatcher."""

from __future__ import annotations

import importlib.util
import os
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
    assert "``" not in res.stdout  # docstring markup is not help text


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
        p.add_argument("--fail", choices=["value", "file", "isdir", "perm", "other", "ctrl-c"])

    def run(args):
        calls.append(args)
        if args.fail == "value":
            raise ValueError("bad value given")
        if args.fail == "file":
            raise FileNotFoundError("no such file: x.tif")
        if args.fail == "isdir":
            raise IsADirectoryError(21, "Is a directory", "out")
        if args.fail == "perm":
            raise PermissionError(13, "Permission denied", "runs/x")
        if args.fail == "other":
            raise RuntimeError("boom")
        if args.fail == "ctrl-c":
            raise KeyboardInterrupt
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


@pytest.mark.parametrize(
    "kind, message",
    [
        ("value", "bad value given"),
        ("file", "no such file: x.tif"),
        ("isdir", "[Errno 21] Is a directory: 'out'"),  # any OSError, not only FileNotFoundError
        ("perm", "[Errno 13] Permission denied: 'runs/x'"),
    ],
)
def test_user_errors_become_exit_2_with_message(fake_command, capsys, kind, message):
    assert cli.main(["fake", "--fail", kind]) == 2
    err = capsys.readouterr().err
    assert f"napari-clickseg fake: error: {message}" in err


def test_programming_errors_are_not_swallowed(fake_command):
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["fake", "--fail", "other"])


def test_ctrl_c_exits_130_without_a_traceback(fake_command, capsys):
    assert cli.main(["fake", "--fail", "ctrl-c"]) == 130
    assert capsys.readouterr().err.strip() == "napari-clickseg: interrupted"


def test_train_stopped_before_its_run_began_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    import napari_clickseg.training.trainer as trainer

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", stopped)
    out = tmp_path / "run"
    argv = ["train", "--model", "early", "--data", str(tmp_path), "--out", str(out)]
    assert cli.main(argv) == 130
    assert "nothing was written" in capsys.readouterr().err and not out.exists()


def test_subcommand_options_are_validated(fake_command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["fake", "--value", "notanint"])
    assert e.value.code == 2
    assert not fake_command


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(name):
    module = cli.COMMANDS[name][0]
    assert importlib.util.find_spec(module) is not None, f"{module} is missing"
    res = run_cli(name, "--help")
    assert res.returncode == 0, res.stderr
    assert f"napari-clickseg {name}" in res.stdout and "``" not in res.stdout


# ----------------------------------------------------------------------------- segment inputs and outputs
# These fail before any model is loaded, so "--model" never needs to exist.
@pytest.fixture
def gray_tif(tmp_path):
    import numpy as np
    import tifffile

    src = tmp_path / "img.tif"
    tifffile.imwrite(src, np.zeros((40, 50), dtype=np.uint8))
    return src


def test_segment_refuses_a_directory_as_output(gray_tif, tmp_path, capsys):
    # regression: with --overwrite an existing directory raised IsADirectoryError (a traceback)
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    args = ["segment", str(gray_tif), "--click", "5,6,+", "--model", "none", "-o", str(out_dir)]
    for extra in ([], ["--overwrite"]):
        assert cli.main([*args, *extra]) == 2
        assert "is a directory" in capsys.readouterr().err
    out_tif = tmp_path / "results.tif"
    out_tif.mkdir()
    assert cli.main([*args[:-1], str(out_tif), "--overwrite"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert out_dir.is_dir() and not any(out_dir.iterdir())


def test_segment_never_writes_over_the_input_file(gray_tif, tmp_path, capsys):
    # regression: the check compared resolved paths, so another name for the same file (a hard
    # link here; a different case on macOS or Windows) was truncated with --overwrite
    before = gray_tif.read_bytes()
    link = tmp_path / "link.tif"
    os.link(gray_tif, link)
    args = ["segment", str(gray_tif), "--click", "5,6,+", "--model", "none", "-o", str(link), "--overwrite"]
    assert cli.main(args) == 2
    assert "overwrite the input image" in capsys.readouterr().err
    assert gray_tif.read_bytes() == before


@pytest.mark.parametrize("name", ["labels.png", "labels.jpg", "labels", "labels.tif.bak"])
def test_segment_refuses_non_tiff_output_names(gray_tif, tmp_path, capsys, name):
    # regression: "-o out.png" wrote TIFF bytes under a .png name
    out = tmp_path / name
    assert cli.main(["segment", str(gray_tif), "--click", "5,6,+", "--model", "none", "-o", str(out)]) == 2
    assert ".tif or .tiff" in capsys.readouterr().err
    assert not out.exists()


def _bad_tiffs(tmp_path):
    import numpy as np
    import tifffile

    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\0garbage")
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.arange(100 * 120, dtype=np.uint8).reshape(100, 120))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[:300])
    return corrupt, truncated


def test_segment_read_errors_name_the_file(tmp_path, capsys):
    # regression: a corrupt TIFF gave "image must be 2D ... got shape (0,)", a truncated one
    # "failed to read 12000 bytes, got 44", neither naming the file
    for bad in _bad_tiffs(tmp_path):
        out = tmp_path / f"{bad.stem}_labels.tif"
        assert cli.main(["segment", str(bad), "--click", "5,6,+", "--model", "none", "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "napari-clickseg segment: error: " in err and str(bad) in err
        assert not out.exists()


def test_segment_refuses_a_z_stack(tmp_path, capsys):
    # regression: an ImageJ z-stack was read as a 5-channel 2D image and segmented (exit 0)
    import numpy as np
    import tifffile

    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, np.zeros((5, 64, 64), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    out = tmp_path / "o.tif"
    assert cli.main(["segment", str(stack), "--click", "30,30,+", "--model", "none", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"napari-clickseg segment: error: {stack}: a z-stack" in err and "one 2D plane per file" in err
    assert not out.exists()


def test_the_package_warnings_are_one_line_each(tmp_path, capsys):
    """A 10-page TIFF without axes is segmented as channels, and the CLI says so in one line."""
    import numpy as np
    import tifffile

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.random.default_rng(0).integers(0, 255, (10, 40, 50), dtype=np.uint8))
    out = tmp_path / "labels.tif"
    assert cli.main(["segment", str(stack), "--click", "20,25,+", "--model", "early", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"napari-clickseg: warning: {stack}: its 10 pages carry no axis metadata" in err
    assert "read_array(" not in err and out.is_file()


def test_other_warnings_keep_their_usual_form(capsys):
    from napari_clickseg.data.io import PagesReadAsChannels

    passed_on = []
    show = cli._one_line_for_ours(lambda *a: passed_on.append(a))
    show(RuntimeWarning("from a library"), RuntimeWarning, "lib.py", 3)
    assert [a[1:3] for a in passed_on] == [(RuntimeWarning, "lib.py")]
    assert capsys.readouterr().err == ""
    show(PagesReadAsChannels("x.tif: its 9 pages"), PagesReadAsChannels, "io.py", 7)
    assert capsys.readouterr().err == "napari-clickseg: warning: x.tif: its 9 pages\n"
    assert len(passed_on) == 1


def test_python_dash_m_runs_the_command_line():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "napari_clickseg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "evaluate" in out.stdout
