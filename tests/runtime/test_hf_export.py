"""`parc export DIR --hf`: a trained checkpoint loads in transformers with parc's loss."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.cli import main
from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.runtime.programs import Program
from parc.runtime.train import run_steps

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]


def trained(example: str, tmp: Path) -> tuple[Program, Path]:
    """Three steps of the example in one process, checkpointed."""
    text = (ROOT / "examples" / example).read_text()
    text = text.replace("steps 20", f'steps 3\n  checkpoint every 3 to "{tmp / "ck"}"')
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  mesh (pp = 1)\n}", text,
                  flags=re.S).replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    spec = check_text(text, str(tmp / "spec.par"))
    program = Program(write_program(make_plan(spec), tmp / "program", "spec.par"), None)
    run_steps(program, 3)
    return program, tmp / "ck"


@pytest.mark.parametrize("example, cls", [("gpt_tiny.par", "GPT2LMHeadModel"),
                                          ("llama_tiny.par", "LlamaForCausalLM")])
def test_exported_model_has_parcs_loss_in_transformers(example, cls, tmp_path, capsys):
    program, checkpoints = trained(example, tmp_path)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoints), "--hf", "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json",
                                               "parc_manifest.json"}
    hf = getattr(transformers, cls).from_pretrained(out).eval()
    torch.manual_seed(0)
    x = torch.randint(0, 64, (4, 17))
    tokens, targets = x[:, :16], x[:, 1:]
    with torch.no_grad():
        want = F.cross_entropy(hf(input_ids=tokens).logits.flatten(0, 1), targets.flatten())
        (got,) = program.modules[0](tokens, targets)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert main(["export", str(checkpoints), "--hf", "-o", str(out)]) == 0  # over itself
    (out / "notes.txt").write_text("mine")  # a file parc did not write is never lost
    assert main(["export", str(checkpoints), "--hf", "-o", str(out)]) == 1
    assert "E398" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
