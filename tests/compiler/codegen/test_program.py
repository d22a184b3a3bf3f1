"""The program directory: readable, lint-clean, complete, and written atomically."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parc.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("programs")
    for name in ("gpt_tiny", "gpt_tp", "llama_tiny", "gpt_interleaved", "gpt2_small"):
        assert main(["compile", str(ROOT / f"examples/{name}.par"), "-o",
                     str(out / name)]) == 0
    return out


def test_files(programs):
    tiny = programs / "gpt_tiny"
    assert sorted(p.name for p in tiny.iterdir()) == [
        "launch.txt", "main.py", "parc_manifest.json", "plan.json", "stage_0.py", "stage_1.py"]
    assert (tiny / "launch.txt").read_text().startswith(
        "torchrun --standalone --nproc_per_node=4 ")
    plan = json.loads((tiny / "plan.json").read_text())
    assert plan["mesh"] == {"pp": 2, "dp": 2} and plan["schedule"] == "1f1b"
    program = plan["program"]
    assert program["stages"][1]["live_in"][0]["shape"] == [2, 16, 32]  # 16 / 4 mb / 2 dp
    assert program["inputs"]["tokens"]["splits"] == [["dp", 0]]
    assert len(list((programs / "gpt_interleaved").glob("stage_*.py"))) == 8


def test_generated_code_passes_ruff(programs):
    # from the program's own directory, where parc is an installed (third-party) package
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "-q", "."],
                            capture_output=True, text=True, cwd=programs)
    assert result.returncode == 0, result.stdout + result.stderr


def test_collectives_are_written_out_by_axis(programs):
    stage = (programs / "gpt_tp" / "stage_0.py").read_text()
    # two each way in the blocks' one class, one each for the vocabulary-parallel embedding
    # and head
    assert stage.count('C.all_reduce(') == 3 and stage.count('C.grad_all_reduce(') == 3
    assert 'C.vocab_parallel_embedding(tokens, self.embed_wte, [self.groups["tp"]])' in stage
    assert 'C.vocab_parallel_cross_entropy(' in stage
    assert 'self.groups["tp"]' in stage
    assert "        # mlp\n" in stage  # scopes below the call head each group of lines
    assert "# lm_loss" in stage
    assert '("mlp_fc1_w", "dp")' in stage  # data-parallel sync once per step
    gpt2 = (programs / "gpt2_small" / "stage_0.py").read_text()
    assert "nn.Parameter(torch.empty([768, 384]))  # B@dp, S(1)@tp" in gpt2  # q: 768 / tp


def test_generated_stage_runs_alone(programs):
    """Stage modules are plain torch: import one and run it on local shapes."""
    import importlib.util

    import torch

    path = programs / "llama_tiny" / "stage_0.py"
    spec = importlib.util.spec_from_file_location("llama_stage_0", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stage = module.Stage0({"pp": None})
    for p in stage.parameters():
        torch.nn.init.normal_(p, std=0.02)
    (out,) = stage(torch.randint(0, 64, (4, 16)))
    assert out.shape == (4, 16, 32)


def test_failed_compile_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.par"
    bad.write_text((ROOT / "examples/gpt_tiny.par").read_text().replace("mesh (pp = 2, dp = 2)",
                                                                         "mesh (pp = 3)"))
    out = tmp_path / "out"
    assert main(["compile", str(bad), "-o", str(out)]) == 1
    assert "error[E301]" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_recompiling_replaces_the_directory_whole(tmp_path):
    out = tmp_path / "prog"
    assert main(["compile", str(ROOT / "examples/gpt_interleaved.par"), "-o", str(out)]) == 0
    assert len(list(out.glob("stage_*.py"))) == 8
    assert main(["compile", str(ROOT / "examples/gpt_tiny.par"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("stage_*.py")) == ["stage_0.py", "stage_1.py"]
    assert [p.name for p in tmp_path.iterdir()] == ["prog"]


def test_compile_never_deletes_what_it_did_not_write(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "x" / "gpt.par"
    spec.parent.mkdir()
    spec.write_text((ROOT / "examples/gpt_tiny.par").read_text())
    # the spec's own directory
    assert main(["compile", str(spec), "-o", str(spec.parent)]) == 1
    err = capsys.readouterr().err
    assert "error[E398]" in err and "`gpt.par`" in err and "Traceback" not in err
    assert spec.exists()
    # a directory of someone's files
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "thesis.txt").write_text("years of work")
    assert main(["compile", str(spec), "-o", str(notes)]) == 1
    assert "holds no parc program" in capsys.readouterr().err
    assert (notes / "thesis.txt").read_text() == "years of work" and (notes / "sub").is_dir()
    # a file, and the working directory
    assert main(["compile", str(spec), "-o", str(spec)]) == 1
    assert "is a file" in capsys.readouterr().err and spec.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["compile", str(spec), "-o", "."]) == 1
    assert "working directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_compile_writes_new_empty_or_its_own_program(tmp_path, capsys):
    spec = ROOT / "examples/gpt_tiny.par"
    assert main(["compile", str(spec), "-o", str(tmp_path / "new")]) == 0
    assert "(a new directory)" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["compile", str(spec), "-o", str(tmp_path / "empty")]) == 0
    assert "(into the empty directory)" in capsys.readouterr().out
    program = tmp_path / "new"
    (program / "__pycache__").mkdir()  # python ran it
    assert main(["compile", str(spec), "-o", str(program)]) == 0
    assert "(replacing the parc program there)" in capsys.readouterr().out
    (program / "parc_manifest.json").unlink()  # as parc wrote programs before manifests
    assert main(["compile", str(spec), "-o", str(program)]) == 0
    assert "(replacing the parc program there)" in capsys.readouterr().out
    (program / "results.csv").write_text("mine")
    assert main(["compile", str(spec), "-o", str(program)]) == 1
    assert "`results.csv`, which parc did not write" in capsys.readouterr().err
    assert (program / "results.csv").exists() and (program / "main.py").exists()


def test_unwritable_output_is_a_diagnostic(tmp_path, capsys, monkeypatch):
    import errno

    from parc.compiler.codegen import target

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(target.tempfile, "mkdtemp", read_only)
    assert main(["compile", str(ROOT / "examples/gpt_tiny.par"), "-o",
                 str(tmp_path / "prog")]) == 1
    err = capsys.readouterr().err
    assert "error[E397]" in err and "Read-only file system" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
