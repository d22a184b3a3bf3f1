import subprocess
import sys

from parc.cli import COMMANDS, main


def test_cli_surface_grows_only_on_purpose():
    assert COMMANDS == ("check", "ir", "plan", "schedule", "compile", "run", "tune",
                        "calibrate", "report", "export", "eval", "sample")


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


def test_ir_after_a_pass_scope_and_summary(in_root, capsys):
    assert main(["ir", "examples/gpt_tp.par", "--after", "sbp", "--scope", "block[1].mlp*"]) == 0
    out = capsys.readouterr().out
    assert "needs(" not in out.split("graph")[0]
    assert "@block[1].mlp.fc2" in out and "@block[2]" not in out
    assert main(["ir", "examples/gpt_tp.par", "--summary"]) == 0
    table = capsys.readouterr().out
    assert "AR@tp x2" in table and "gradAR@dp x16" in table


def test_ir_json_and_ir_files(in_root, capsys, tmp_path):
    import json

    assert main(["ir", "examples/gpt_tiny.par", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mesh"] == {"pp": 2, "dp": 2}
    assert [op["kind"] for op in data["ops"]].count("embedding") == 1
    assert main(["ir", "examples/gpt_tiny.par", "--after", "sbp"]) == 0
    saved = tmp_path / "g.ir"
    saved.write_text(capsys.readouterr().out)
    assert main(["ir", str(saved), "--run", "boxing", "--verify"]) == 0
    assert capsys.readouterr().out.count("grad_all_reduce") == 68
    assert main(["ir", str(saved), "--run", "nope"]) == 1
    assert "unknown pass `nope`" in capsys.readouterr().err


def test_plan_prints_stages_memory_and_reasons(in_root, capsys):
    assert main(["plan", "examples/gpt2_small.par"]) == 0
    out = capsys.readouterr().out
    assert "predicted step" in out and "memory per rank" in out
    assert "why the boundaries fall where they do" in out
    assert main(["plan", "examples/gpt_tiny.par", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert [s["layers"][0] for s in data["stages"]] == ["embed", "block[2]"]
    assert data["fits"] and data["shared_params"] == ["embed.wte"]


def test_schedule_json_follows_the_interface(in_root, capsys):
    import json

    assert main(["schedule", "examples/gpt_interleaved.par", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["ranks"]) == 4 and data["ranks"][0]["rank"] == 0
    assert data["ranks"][0]["actions"][0] == {"op": "F", "stage": 0, "mb": 0}
    assert 0 < data["bubble_ratio"] < 1 and data["predicted_step_s"] > 0
    assert len(data["peak_activation_bytes"]) == 4


def test_schedule_timeline_svg_trace_and_compare(in_root, capsys, tmp_path):
    import json
    import xml.etree.ElementTree as ET

    svg, trace = tmp_path / "t.svg", tmp_path / "t.json"
    assert main(["schedule", "examples/gpt_zb.par", "--svg", str(svg), "--trace",
                 str(trace)]) == 0
    out = capsys.readouterr().out
    assert out.count("rank ") >= 4 and "legend" in out
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg") and "bubble" in svg.read_text()
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert {e["cat"] for e in slices} == {"F", "B", "W"} and len(slices) == 3 * 4 * 8
    assert main(["schedule", "examples/gpt_skip.par", "--compare"]) == 0
    table = capsys.readouterr().out
    for family in ("gpipe", "1f1b", "interleaved", "zb_h1", "skip"):
        assert family in table


def test_set_of_an_unknown_parameter_is_an_error(in_root, capsys):
    assert main(["check", "--set", "foo=1", "--set", "dd=3", "examples/gpt_tiny.par"]) == 1
    err = capsys.readouterr().err
    assert "error[E107]: `--set foo=...`: model `gpt` has no parameter `foo`" in err
    assert "its parameters: vocab, d, heads, layers, seq" in err
    assert "did you mean `d`?" in err
    assert main(["check", "-q", "--set", "d=64", "examples/gpt_tiny.par"]) == 0


def test_an_output_that_cannot_be_written_is_a_diagnostic(in_root, capsys, tmp_path):
    assert main(["schedule", "examples/gpt_tiny.par", "--svg", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error[E397]" in err and "is a directory" in err and "Traceback" not in err
    (tmp_path / "afile").write_text("x")
    assert main(["schedule", "examples/gpt_tiny.par", "--trace",
                 str(tmp_path / "afile" / "t.json")]) == 1
    assert "error[E397]: cannot write" in capsys.readouterr().err


def test_ir_explain_sbp_says_why_each_auto_parameter(in_root, tmp_path, capsys):
    import re
    from pathlib import Path

    text = Path("examples/gpt_tp.par").read_text().replace("layers = 4", "layers = 1")
    text = re.sub(r"sbp \{.*?\n  \}", "sbp {\n    tokens, targets: S(0)@dp\n    *: auto\n  }",
                  text, flags=re.S)
    spec = tmp_path / "auto.par"
    spec.write_text(text)
    assert main(["ir", str(spec), "--explain-sbp"]) == 0
    out = capsys.readouterr().out
    assert "batch split over dp" in out and "tp: best plan" in out
    line = next(x for x in out.splitlines() if "block[0].mlp.fc1.w" in x)
    assert re.search(r"S\(1\)@tp: [\d.]+ ms vs B [\d.]+ ms \(compute \+", line), line
    assert main(["ir", "examples/gpt_tp.par", "--explain-sbp"]) == 0
    assert "no `auto` rule" in capsys.readouterr().out
