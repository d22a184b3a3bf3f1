"""The examples on one device, for tests that train or load a program in this process."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERIAL = "parallel on cpu4 {\n  mesh (pp = 1)\n}"


def serial_program(example: str, where: Path, train: str = "", **hyper) -> Path:
    """Write the program of examples/`example` on one device into `where`/program: its
    model hyperparameters replaced by `hyper`, `train` settings added."""
    from parc.compiler.codegen.program import write_program
    from parc.compiler.plan import make_plan
    from parc.dsl.check import check_text

    text = (ROOT / "examples" / example).read_text()
    for key, value in hyper.items():
        text = re.sub(rf"\b{key} = \d+", f"{key} = {value}", text, count=1)
    text = text.replace("steps 20", f"steps 20\n  {train}")
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", SERIAL, text, flags=re.S)
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    spec = check_text(text, str(where / "serial.par"))
    return write_program(make_plan(spec), where / "program", "serial.par")
