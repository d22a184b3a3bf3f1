"""Hostile inputs to `parc run` and `parc export`: every one is refused before launch with a
located diagnostic naming the file, never a traceback. Nothing here launches a job: the
launcher is replaced by one that records what it was asked."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from parc.cli import main

from .runtime.serial import serial_program

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
ROOT = Path(__file__).resolve().parent.parent
TINY = (ROOT / "examples/gpt_tiny.par").read_text()


def serial_checkpoint(where: Path, **hyper) -> Path:
    """A real checkpoint (4 steps, saved every 2) of gpt_tiny trained in this process."""
    from parc.runtime.programs import Program
    from parc.runtime.train import run_steps

    program = serial_program("gpt_tiny.par", where, f'checkpoint every 2 to "{where / "ck"}"',
                             **hyper)
    run_steps(Program(program, None), 4)
    return where / "ck"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("checkpoints")
    return {"same": serial_checkpoint(base / "same"),
            "wider": serial_checkpoint(base / "wider", d=48),
            "heads": serial_checkpoint(base / "heads", heads=4)}


@pytest.fixture
def launched(monkeypatch):
    """Replaces the launcher: a case that gets this far would have launched."""
    calls = []

    def fake(program, nproc, out, steps, on_record, *args, **kwargs):
        calls.append({"steps": steps, **kwargs})
        return 0

    monkeypatch.setattr("parc.runtime.launch.launch", fake)
    return calls


def spec_file(tmp: Path, ckpt: Path | None = None, init: Path | None = None,
              text: str = TINY, name: str = "spec") -> Path:
    extra = f'\n  checkpoint every 2 to "{ckpt}"' if ckpt else ""
    extra += f'\n  init "{init}"' if init else ""
    path = tmp / f"{name}.par"
    path.write_text(text.replace("steps 20", "steps 6" + extra))
    return path


def refused(capsys, argv: list[str], code: str, *words: str) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1, err
    assert f"error[{code}]" in err, err
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


# ---- the checkpoint of --resume -------------------------------------------------------

def _write(name: str, data: bytes | str):
    def damage(step: Path) -> None:
        target = step / name
        target.write_bytes(data if isinstance(data, bytes) else data.encode())
    return damage


def _truncate(name: str):
    def damage(step: Path) -> None:
        target = step / name
        target.write_bytes(target.read_bytes()[:target.stat().st_size // 2])
    return damage


def _overwrite(name: str, data: bytes):
    def damage(step: Path) -> None:
        target = step / name
        target.write_bytes(data + target.read_bytes()[len(data):])
    return damage


def _remove(name: str):
    return lambda step: (step / name).unlink()


def _edit_meta(change):
    def damage(step: Path) -> None:
        meta = json.loads((step / "parc_meta.json").read_text())
        (step / "parc_meta.json").write_text(json.dumps(change(meta)))
    return damage


NOISE = bytes(random.Random(0).randrange(256) for _ in range(3000))
DAMAGED = {  # name -> (damage to step_4, code, words the error must hold)
    "meta missing": (_remove("parc_meta.json"), "E393", ["has no parc_meta.json"]),
    "meta empty": (_write("parc_meta.json", ""), "E393", ["parc_meta.json:1:1",
                                                          "not valid JSON"]),
    "meta truncated": (_truncate("parc_meta.json"), "E393", ["parc_meta.json:1:",
                                                             "not valid JSON"]),
    "meta random bytes": (_write("parc_meta.json", NOISE), "E393", ["parc_meta.json"]),
    "meta a list": (_write("parc_meta.json", "[1, 2]"), "E393", ["holds no JSON object"]),
    "meta foreign": (_write("parc_meta.json", '{"format": "other", "step": 3}'), "E393",
                     ["`params` is missing"]),
    "meta step text": (_edit_meta(lambda m: {**m, "step": "four"}), "E393",
                       ["`step` is missing or not an integer"]),
    "meta shapes": (_edit_meta(lambda m: {**m, "params": {k: {**v, "shape": "big"} for k, v in
                                                          m["params"].items()}}), "E393",
                    ["has no shape or cuts"]),
    "meta cut": (_edit_meta(lambda m: {**m, "params": {k: {**v, "cuts": ["x9"]} for k, v in
                                                       m["params"].items()}}), "E393",
                 ["a cut `x9`"]),
    "meta disagrees with index": (_edit_meta(lambda m: {**m, "params": {
        **m["params"], "embed.wte": {"cuts": ["full"], "shape": [128, 32]}}}), "E393",
        ["does not match parc_meta.json", "embed.wte"]),
    "index missing": (_remove(".metadata"), "E393", ["has no .metadata"]),
    "index empty": (_write(".metadata", b""), "E393", [".metadata is damaged"]),
    "index truncated": (_truncate(".metadata"), "E393", [".metadata is damaged"]),
    "index random bytes": (_write(".metadata", NOISE), "E393", [".metadata is damaged"]),
    "data truncated": (_truncate("__0_0.distcp"), "E393", ["__0_0.distcp is cut short"]),
    "data missing": (_remove("__0_0.distcp"), "E393", ["__0_0.distcp is missing"]),
    "data header random bytes": (_overwrite("__0_0.distcp", NOISE[:64]), "E393",
                                 ["__0_0.distcp is damaged"]),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_checkpoint_is_refused_before_launch(case, checkpoints, tmp_path, capsys,
                                                       launched):
    damage, code, words = DAMAGED[case]
    ck = tmp_path / "ck"
    shutil.copytree(checkpoints["same"], ck)
    damage(ck / "step_4")
    refused(capsys, ["run", str(spec_file(tmp_path, ck)), "--resume", "--out",
                     str(tmp_path / "out")], code, *words)
    assert launched == []


@pytest.mark.parametrize("case", ["no directory", "no latest", "latest empty",
                                  "latest names nothing", "latest random bytes"])
def test_a_missing_checkpoint_is_refused_before_launch(case, checkpoints, tmp_path, capsys,
                                                       launched):
    ck = tmp_path / "ck"
    if case != "no directory":
        shutil.copytree(checkpoints["same"], ck)
    if case == "no latest":
        (ck / "latest").unlink()
    elif case == "latest empty":
        (ck / "latest").write_text("")
    elif case == "latest names nothing":
        (ck / "latest").write_text("step_99")
    elif case == "latest random bytes":
        (ck / "latest").write_bytes(NOISE[:40])
    code = "E392" if case in ("no directory", "no latest") else "E393"
    err = refused(capsys, ["run", str(spec_file(tmp_path, ck)), "--resume", "--out",
                           str(tmp_path / "out")], code, str(ck))
    # at the `checkpoint` line of the spec, or in the pointer file
    assert "spec.par:20:3:" in err or f"{ck / 'latest'}:1:1:" in err
    assert launched == []


def test_a_checkpoint_of_another_model_is_refused(checkpoints, tmp_path, capsys, launched):
    refused(capsys, ["run", str(spec_file(tmp_path, checkpoints["wider"])), "--resume",
                     "--out", str(tmp_path / "out")], "E394", "of another model",
            "`embed.wte` is [64, 48] there and [64, 32] in the spec")
    assert launched == []


def test_a_checkpoint_at_or_past_the_steps_is_refused(checkpoints, tmp_path, capsys,
                                                      launched):
    spec = spec_file(tmp_path, checkpoints["same"])
    for steps in ("4", "3"):
        refused(capsys, ["run", str(spec), "--resume", "--steps", steps, "--out",
                         str(tmp_path / "out")], "E395", "has 4 steps done",
                f"the run asks for {steps}: nothing is left to train")
    assert launched == []


def test_other_settings_resume_with_a_note(checkpoints, tmp_path, capsys, launched):
    spec = spec_file(tmp_path, checkpoints["heads"],
                     text=TINY.replace("lr = 1e-3", "lr = 2e-3"))
    assert main(["run", str(spec), "--resume", "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "note[E396]" in captured.err and "saved with other settings" in captured.err
    assert "heads = 4 (now 2), optimizer.lr = 0.001 (now 0.002)" in captured.err
    assert "resuming after step 4 from" in captured.out
    assert launched == [{"extra": [], "resume": True, "steps": 6}]


def test_the_same_spec_resumes_without_notes(checkpoints, tmp_path, capsys, launched):
    assert main(["run", str(spec_file(tmp_path, checkpoints["same"])), "--resume", "--out",
                 str(tmp_path / "out")]) == 0
    assert "note[" not in capsys.readouterr().err
    assert len(launched) == 1


# ---- the weights file of `init` -------------------------------------------------------

def good_weights() -> dict:
    from parc.dsl.check import check_text
    from parc.runtime.params import init_full

    spec = check_text(TINY, "w.par")
    return {p.name: init_full(p.name, tuple(d.as_int() for d in p.type.shape), p.init, 0)
            for p in spec.model.params}


def _save(value):
    return lambda path: torch.save(value() if callable(value) else value, path)


def _bytes(data: bytes):
    return lambda path: path.write_bytes(data)


def _truncated(path: Path) -> None:
    torch.save(good_weights(), path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 3])


class Opaque:
    pass


WEIGHTS = {  # name -> (writes the file, words the error must hold)
    "empty": (_bytes(b""), ["cannot load it as a torch state dict"]),
    "random bytes": (_bytes(NOISE), ["cannot load it as a torch state dict"]),
    "text": (_bytes(b"weights, trust me\n"), ["cannot load it as a torch state dict"]),
    "truncated": (_truncated, ["cannot load it as a torch state dict"]),
    "a tensor": (_save(torch.zeros(3)), ["holds a Tensor, not a state dict"]),
    "a list": (_save([torch.zeros(3)]), ["holds a list, not a state dict"]),
    "a number": (_save(3), ["holds a int, not a state dict"]),
    "not tensors": (_save({"embed.wte": [1.0, 2.0]}), ["`embed.wte` is a list, not a tensor"]),
    "not loadable safely": (_save({"embed.wte": Opaque()}),
                            ["cannot load it as a torch state dict"]),
    "missing names": (_save({"embed.wte": torch.zeros(64, 32)}),
                      ["it has no `embed.wpe` (nor ", "e.g. `embed.wte`"]),
    "wrong shape": (_save(lambda: {**good_weights(), "embed.wpe": torch.zeros(16, 48)}),
                    ["`embed.wpe` has shape (16, 48), the spec needs (16, 32)"]),
    "nan": (_save(lambda: {**good_weights(), "block[1].mlp.fc1.w": torch.full((32, 128),
                                                                            float("nan"))}),
            ["`block[1].mlp.fc1.w` holds 4096 NaN or infinite values"]),
    "inf": (_save(lambda: {**good_weights(), "embed.wte": torch.full((64, 32), float("inf"))}),
            ["`embed.wte` holds 2048 NaN or infinite values"]),
    "hugging face, another model": (_save({"transformer.wte.weight": torch.zeros(64, 32),
                                           "transformer.wpe.weight": torch.zeros(16, 32),
                                           "transformer.h.0.ln_1.weight": torch.ones(32)}),
                                    ["it has no `block[0].ln1.b`"]),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_a_bad_weights_file_is_refused_before_launch(case, tmp_path, capsys, launched):
    write, words = WEIGHTS[case]
    weights = tmp_path / "w.pt"
    write(weights)
    err = refused(capsys, ["run", str(spec_file(tmp_path, init=weights)), "--out",
                           str(tmp_path / "out")], "E385", str(weights), *words)
    assert "spec.par:" in err  # at the `init` line
    assert launched == []


def test_good_weights_pass(tmp_path, capsys, launched):
    weights = tmp_path / "w.pt"
    torch.save(good_weights(), weights)
    assert main(["run", str(spec_file(tmp_path, init=weights)), "--out",
                 str(tmp_path / "out")]) == 0
    assert len(launched) == 1


def test_a_weights_directory_is_refused(tmp_path, capsys, launched):
    (tmp_path / "w.pt").mkdir()
    refused(capsys, ["run", str(spec_file(tmp_path, init=tmp_path / "w.pt"))], "E383",
            "does not exist")


# ---- outputs, memory, command-line values ---------------------------------------------

def test_unusable_outputs_are_refused(checkpoints, tmp_path, capsys, launched, monkeypatch):
    spec = spec_file(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    refused(capsys, ["run", str(spec), "--out", str(afile)], "E397",
            f"`--out {afile}`: it is a file")
    refused(capsys, ["run", str(spec), "--out", str(afile / "sub")], "E397", "is a file")
    refused(capsys, ["run", str(spec), "--out", str(tmp_path / "o"), "--trace", str(afile)],
            "E397", "`--trace")
    err = refused(capsys, ["run", str(spec_file(tmp_path, afile, name="ck")), "--out",
                           str(tmp_path / "o")], "E397", "checkpoints cannot be saved")
    assert "ck.par:20:3:" in err
    (tmp_path / "o" / "program").mkdir(parents=True)
    (tmp_path / "o" / "program" / "notes.txt").write_text("mine")
    refused(capsys, ["run", str(spec), "--out", str(tmp_path / "o")], "E398", "notes.txt")
    assert (tmp_path / "o" / "program" / "notes.txt").read_text() == "mine"
    monkeypatch.setattr("parc.preflight.os.access", lambda path, mode: False)  # read-only
    refused(capsys, ["run", str(spec), "--out", str(tmp_path / "ro")], "E397",
            "is not writable")
    assert launched == []


def test_a_plan_over_memory_needs_force(tmp_path, capsys, launched):
    small = ("hardware cpu4 {\n  device cpu\n  devices 4\n  memory 200 KB\n  flops_f32 50 GFLOPS\n"
             "  mem_bw 20 GB/s\n  intra_bw 5 GB/s\n  intra_latency 20 us\n}")
    spec = spec_file(tmp_path, text=TINY.replace("hardware cpu4 = std.hw.cpu(devices = 4)",
                                                 small))
    assert main(["plan", str(spec)]) == 1
    capsys.readouterr()
    refused(capsys, ["run", str(spec), "--out", str(tmp_path / "o")], "E361",
            "KB on pipeline rank 0, over the 200.00 KB of `cpu4`",
            "--force")
    assert launched == []
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--force"]) == 0
    assert "(over memory: --force)" in capsys.readouterr().out
    assert len(launched) == 1


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_steps_must_be_positive(steps, tmp_path, capsys, launched):
    refused(capsys, ["run", str(spec_file(tmp_path)), "--steps", steps], "E399",
            f"`--steps {steps}`")
    assert launched == []


def test_set_of_an_unknown_parameter_stops_a_run(tmp_path, capsys, launched):
    refused(capsys, ["run", str(spec_file(tmp_path)), "--set", "foo=1"], "E107",
            "has no parameter `foo`")
    assert launched == []


# ---- export ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["meta random bytes", "meta foreign", "index truncated",
                                  "data missing"])
def test_export_of_a_damaged_checkpoint(case, checkpoints, tmp_path, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(checkpoints["same"], ck)
    DAMAGED[case][0](ck / "step_4")
    refused(capsys, ["export", str(ck), "-o", str(tmp_path / "w.pt")], "E393", str(ck))
    assert not (tmp_path / "w.pt").exists()


def test_export_needs_a_file_to_write(checkpoints, tmp_path, capsys):
    refused(capsys, ["export", str(tmp_path / "none"), "-o", str(tmp_path / "w.pt")], "E392",
            "does not exist")
    refused(capsys, ["export", str(checkpoints["same"]), "-o", str(tmp_path)], "E397",
            "is a directory")
    assert main(["export", str(checkpoints["same"]), "-o", str(tmp_path / "w.pt")]) == 0
    assert torch.load(tmp_path / "w.pt", weights_only=True).keys() == good_weights().keys()


@pytest.mark.parametrize("command", [["sample", "{ck}", "--prompt", "x"],
                                     ["eval", "{spec}", "--checkpoint", "{ck}"],
                                     ["export", "{ck}", "--hf", "-o", "{out}"]])
def test_every_command_that_reads_a_checkpoint_checks_it(command, checkpoints, tmp_path,
                                                          capsys):
    ck = tmp_path / "ck"
    spec = spec_file(tmp_path)

    def argv(where: Path) -> list[str]:
        return [a.format(ck=where, spec=spec, out=tmp_path / "hf") for a in command]

    refused(capsys, argv(tmp_path / "none"), "E392", "does not exist")
    shutil.copytree(checkpoints["same"], ck)
    DAMAGED["meta truncated"][0](ck / "step_4")
    refused(capsys, argv(ck), "E393", "parc_meta.json")
    assert not (tmp_path / "hf").exists()
