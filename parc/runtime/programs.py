"""A generated program on this rank: its plan, its own modules (stages, kernels) loaded by path
(one copy per program), and the stages this rank runs with their parameters initialised."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

from .mesh import Mesh
from .params import init_full, shard
from .weights import Weights, WeightsError


def sibling(file: str, name: str):
    """The module `name`.py next to `file`, loaded once per version of the file (a program
    compiled again into the same directory is loaded afresh)."""
    path = Path(file).resolve().parent / f"{name}.py"
    key = f"parc_program_{abs(hash((str(path), path.stat().st_mtime_ns)))}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def load_program(program_dir: str | Path) -> dict:
    return json.loads((Path(program_dir) / "plan.json").read_text())["program"]


def compile_backend(spec: dict) -> str | None:
    """The torch.compile backend of a program's stages (None: eager): the plan's, or
    PARC_COMPILE_BACKEND's (`aot_eager` traces without generating code)."""
    if not spec.get("compile"):
        return None
    return os.environ.get("PARC_COMPILE_BACKEND") or spec["compile"]


class Program:
    """The stages of a program that live on this rank, with their parameters initialised."""

    def __init__(self, program_dir: str | Path, mesh: Mesh | None):
        self.dir = Path(program_dir)
        self.spec = load_program(self.dir)
        self.mesh = mesh
        self.device = mesh.device if mesh is not None else torch.device("cpu")
        pp = mesh.coords.get("pp", 0) if mesh is not None else None
        groups = mesh.groups if mesh is not None else {}
        seed = self.spec["train"]["seed"]
        imported = Weights(self.spec["train"]["init"]) if self.spec["train"].get("init") \
            else None  # its index only: each parameter's slice is read when it is set
        self.modules: dict[int, torch.nn.Module] = {}
        for stage in self.spec["stages"]:
            if pp is not None and stage["rank"] != pp:
                continue
            cls = getattr(sibling(str(self.dir / "main.py"), stage["module"]), stage["class"])
            module = cls({axis: groups.get(axis) for axis, _ in self.spec["mesh"]})
            with torch.no_grad():
                for p in stage["params"]:
                    splits = self._splits(p["splits"])
                    if imported is not None:
                        if p["name"] not in imported:
                            raise WeightsError(f"the weights file has no `{p['name']}` (it "
                                               f"has {len(imported)} tensors)")
                        mine = imported.shard(p["name"], tuple(p["shape"]), splits)
                    else:
                        mine = shard(init_full(p["name"], tuple(p["shape"]),
                                               (p["init"][0], tuple(p["init"][1])), seed),
                                     splits)
                    module.get_parameter(p["attr"]).copy_(mine)
            self.modules[stage["index"]] = module.to(self.device)
        self.data_splits = {name: self._splits(d["splits"])
                            for name, d in self.spec["inputs"].items()}
        # what the executor calls: the modules themselves, or compiled wrappers of them;
        # `modules` stays the eager modules, whose parameters (and their names) the
        # optimizer, gradient sync and checkpoints use
        self.backend = compile_backend(self.spec)
        self.runners: dict[int, torch.nn.Module] = {
            index: module if self.backend is None else
            torch.compile(module, backend=self.backend, dynamic=False)
            for index, module in self.modules.items()}

    def _splits(self, splits) -> list[tuple[int, int, int]]:
        """(dim, ways, index) of this rank for each (axis, dim) that splits a tensor."""
        if self.mesh is None:
            return []
        return [(dim, self.mesh.size(axis), self.mesh.coords[axis]) for axis, dim in splits]

    def groups(self) -> list:
        """Every process group this rank is in: the mesh axes and the copies of parameters."""
        mesh_groups = [g for g in self.mesh.groups.values() if g is not None]
        copies = [g for g in self.mesh.copy_groups.values() if g is not None]
        return mesh_groups + copies

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters()]

    def copies(self) -> dict[str, list[torch.nn.Parameter]]:
        """Parameter name -> every local tensor holding it (one per stage that keeps it)."""
        out: dict[str, list] = {}
        for stage in self.spec["stages"]:
            module = self.modules.get(stage["index"])
            if module is not None:
                for p in stage["params"]:
                    out.setdefault(p["name"], []).append(module.get_parameter(p["attr"]))
        return out

    def named_shards(self) -> dict[str, tuple[torch.nn.Parameter, list]]:
        """Parameter name -> (this rank's tensor, its (dim, ways, index) splits). A parameter
        kept on several stages appears once."""
        out = {}
        for stage in self.spec["stages"]:
            module = self.modules.get(stage["index"])
            if module is None:
                continue
            for p in stage["params"]:
                out.setdefault(p["name"], (module.get_parameter(p["attr"]),
                                           self._splits(p["splits"])))
        return out
