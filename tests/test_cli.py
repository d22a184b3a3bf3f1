import subprocess
import sys

from parc.cli import COMMANDS, main


def test_cli_surface_grows_only_on_purpose():
    assert COMMANDS == ("check",)


def test_check_ok_and_summary(in_root, capsys):
    assert main(["check", "tests/dsl/gpt_inline.par"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tests/dsl/gpt_inline.par: ok - model gpt:")


def test_check_reports_every_file_and_fails(in_root, capsys):
    status = main(["check", "tests/dsl/gpt_inline.par", "tests/dsl/bad/mesh_missing.par",
                   "tests/dsl/bad/sbp_unknown_axis.par"])
    out = capsys.readouterr()
    assert status == 1
    assert "gpt_inline.par: ok" in out.out
    assert out.err.count("error[") == 2


def test_bad_override_is_a_diagnostic(in_root, capsys):
    assert main(["check", "--set", "d", "tests/dsl/gpt_inline.par"]) == 1
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_console_script_runs_as_a_module(in_root):
    result = subprocess.run([sys.executable, "-m", "parc.cli", "check", "-q",
                             "tests/dsl/bad/syntax_stray_brace.par"], capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("tests/dsl/bad/syntax_stray_brace.par:1:1: error[E002]")
    assert "Traceback" not in result.stderr
