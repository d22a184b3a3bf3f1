"""Runs compiled programs under the device audit; each rank writes what it found.

Usage: torchrun --nproc_per_node=N audit_driver.py OUT_DIR PROGRAM_DIR [...]
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from parc.runtime.mesh import build_mesh, init_distributed
from parc.runtime.programs import Program, load_program
from parc.runtime.train import run_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.runtime.device_audit import DeviceAudit  # noqa: E402


def main() -> None:
    out, programs = Path(sys.argv[1]), sys.argv[2:]
    init_distributed("gloo")
    findings, checked = [], 0
    for program_dir in programs:
        spec = load_program(program_dir)
        mesh = build_mesh(tuple(tuple(a) for a in spec["mesh"]))
        program = Program(program_dir, mesh)
        audit = DeviceAudit(program.device)
        audit.install()
        with audit:
            run_steps(program, 2)
        audit.uninstall()
        findings += [f"{Path(program_dir).parent.name}: {f}" for f in audit.findings]
        checked += audit.checked
        dist.barrier()
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(
        {"findings": sorted(set(findings)), "checked": checked}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
