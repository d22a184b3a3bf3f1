"""Checks the `parallel` block: mesh, SBP rules, stages, schedule, recompute."""

from __future__ import annotations

import re

from ..ops.sbp import BROADCAST, NdSbp, Sbp
from . import ast
from .context_parallel import check_context_axis
from .diagnostics import closest
from .settings import (
    POISON,
    Ident,
    SettingEvaluator,
    boolean,
    is_int,
    is_number,
    read_settings,
    show,
)
from .spec import HardwareSpec, ModelSpec, ParallelSpec, ScheduleSpec, TrainSpec, skip_count
from .vocab_check import vocab_conflict

PIPELINE_AXIS = "pp"
SPLIT_BACKWARD = ("zb_h1", "zb_v", "v_half")
V_SHAPED = ("zb_v", "v_half")  # two stages per pp rank, placed in a V
SCHEDULES = {"gpipe": {}, "1f1b": {}, "interleaved": {"virtual": 2}, "zb_h1": {},
             "zb_v": {}, "v_half": {},
             "skip": {"ratio": 0.25, "seed": 0, "paths": Ident("search"), "reorder": False}}


def _recompute(values, span, err, key):
    names = []
    for value in values:
        if not isinstance(value, Ident):
            return err("E148", f"`recompute` takes `all`, `none` or def names, not {show(value)}",
                       span)
        names.append(value.name)
    if ("all" in names or "none" in names) and len(names) > 1:
        return err("E148", "`recompute all` and `recompute none` stand alone", span)
    return () if names == ["none"] else tuple(names)


def _kernels(values, span, err, key):
    from .settings import ident

    return ident("triton", "torch")(values, span, err, key)


def _axis_name(values, span, err, key):
    if len(values) != 1 or not isinstance(values[0], Ident):
        return err("E352", f"`{key}` takes the name of a mesh axis, e.g. `{key} tp`", span)
    return values[0].name


SETTINGS = {"recompute": _recompute, "kernels": _kernels, "compile": boolean,
            "sequence_parallel": _axis_name, "vocab_parallel": _axis_name,
            "context_parallel": _axis_name}


def compile_conflict(recompute: tuple[str, ...], schedule: str,
                     context: str | None = None) -> str | None:
    """Why `compile true` cannot run with this plan, if it cannot."""
    if context is not None:
        return (f"`compile true` cannot run with `context_parallel {context}`: the ring "
                "attention's point-to-point messages are not run inside compiled stages")
    if recompute:
        return ("`compile true` cannot run with `recompute`: recomputation runs stages or "
                "calls again under torch.utils.checkpoint, which parc does not run inside "
                "compiled stages")
    if schedule in SPLIT_BACKWARD:
        return (f"`compile true` cannot run with `schedule {schedule}`: its split backward defers "
                "each matmul's weight gradient by finding the matmul in the autograd graph, "
                "where a compiled stage leaves one node for the whole stage")
    return None


def glob_regex(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


class ParallelChecker:
    def __init__(self, node: ast.Parallel, model: ModelSpec, train: TrainSpec,
                 hardware: HardwareSpec, err, def_names: set[str]):
        self.node, self.model, self.train, self.hw = node, model, train, hardware
        self.err = err
        self.def_names = def_names
        self.ok = True
        self.auto_sbp: tuple[str, ...] = ()  # parameters an `auto` rule matched

    def fail(self, *args, **kwargs) -> None:
        self.ok = False
        self.err(*args, **kwargs)

    def check(self) -> ParallelSpec | None:
        by_kind: dict[type, list] = {}
        for stmt in self.node.body:
            by_kind.setdefault(type(stmt), []).append(stmt)
        for kind, word in ((ast.Mesh, "mesh"), (ast.SbpBlock, "sbp"), (ast.Schedule, "schedule"),
                           (ast.StagesAuto, "stages auto")):
            for extra in by_kind.get(kind, [])[1:]:
                self.fail("E302", f"`{word}` is given twice in `parallel`", extra.span)
        meshes = by_kind.get(ast.Mesh, [])
        autos = by_kind.get(ast.ParallelAuto, [])
        if autos:
            others = [s for s in self.node.body
                      if not isinstance(s, ast.ParallelAuto | ast.Setting)]
            if others:
                self.fail("E307", "`auto` chooses the whole plan: leave out mesh, sbp, stages and "
                          "schedule, or leave out `auto`", others[0].span)
                return None
            return self.auto_spec()
        if not meshes:
            self.fail("E303", "`parallel` needs a `mesh`, e.g. `mesh (pp = 2, dp = 2)`",
                      self.node.span)
            return None
        mesh = self.mesh(meshes[0])
        if mesh is None:
            return None
        settings = read_settings(by_kind.get(ast.Setting, []), SETTINGS, SettingEvaluator(self.err),
                                 self.err, "`parallel`")
        spans = settings.pop("__spans__")
        if any(key not in settings for key in spans):
            self.ok = False
        schedules = by_kind.get(ast.Schedule, [])
        schedule = self.schedule(schedules[0] if schedules else None, mesh)
        rules = [r for block in by_kind.get(ast.SbpBlock, []) for r in block.rules]
        sbp = self.sbp(rules, mesh)
        stages = self.stages(by_kind.get(ast.StagesAuto, []), by_kind.get(ast.Stage, []), mesh,
                             schedule)
        recompute = settings.get("recompute", ())
        labels = self.def_names | {part.split("[", 1)[0] for op in self.model.ops
                                   for part in op.scope.split(".") if op.scope}
        for name in recompute:
            if name != "all" and name not in labels:
                guess = closest(name, labels)
                self.fail("E350", f"`recompute {name}`: no call is named `{name}`",
                          spans["recompute"], help=f"did you mean `{guess}`?" if guess else None)
        compiled = settings.get("compile", False)
        if compiled and schedule is not None:
            context = settings.get("context_parallel")
            why = compile_conflict(recompute, schedule.name, context)
            if why is not None:
                self.fail("E351", why, spans["compile"],
                          help="leave out `compile`" + ("" if context else ", or " + (
                          "`recompute`" if recompute else "use `schedule 1f1b`")))
        sequence = settings.get("sequence_parallel")
        if sequence is not None:
            self.sequence_axis(sequence, mesh, sbp, spans["sequence_parallel"])
        context = settings.get("context_parallel")
        if context is not None:
            check_context_axis(self, context, mesh, sbp, sequence, spans["context_parallel"])
            if self.auto_sbp:  # the search would split weights on the axis, which stay whole
                self.fail("E317", f"`auto` SBP rules cannot be combined with `context_parallel "
                          f"{context}`", spans["context_parallel"],
                          help="give the parameters' SBP, or leave out `context_parallel`")
        vocab = settings.get("vocab_parallel")
        if vocab is not None and schedule is not None:
            why = vocab_conflict(vocab, mesh, schedule.name, recompute, sequence)
            if why is not None:
                self.fail("E356", f"`vocab_parallel {vocab}`: {why[0]}", spans["vocab_parallel"],
                          help=why[1])
        if vocab is not None and context is not None:
            self.fail("E356", f"`vocab_parallel {vocab}` cannot be combined with "
                      f"`context_parallel {context}`", spans["vocab_parallel"],
                      help="leave out one of the two settings")
        if not self.ok or schedule is None:
            return None
        return ParallelSpec(self.hw, mesh, sbp, stages, schedule, recompute, self.node.span,
                            kernels=settings.get("kernels"), compile=compiled,
                            sequence_parallel=sequence, vocab_parallel=vocab,
                            vocab_span=spans.get("vocab_parallel"), context_parallel=context,
                            auto_sbp=self.auto_sbp)

    def sequence_axis(self, axis: str, mesh, sbp: dict[str, NdSbp] | None, span) -> None:
        """`sequence_parallel AXIS`: a mesh axis other than the pipeline's, on which the model
        inputs are whole (the sequence split is made from them) and the sequence divides."""
        axes = [a for a, _ in mesh if a != PIPELINE_AXIS]
        if axis not in axes:
            self.fail("E352", f"`sequence_parallel {axis}`: " + (
                      "the pipeline axis splits no tensor" if axis == PIPELINE_AXIS else
                      f"the mesh has no axis `{axis}`"), span,
                      help=f"name a tensor-parallel axis: {', '.join(axes)}" if axes else
                      "the mesh has no axis besides `pp`")
            return
        size = dict(mesh)[axis]
        for info in self.model.inputs:
            name = info.name
            entry = (sbp or {}).get(name)
            if entry is not None and entry.on(axis).kind != "B":
                self.fail("E352", f"`sequence_parallel {axis}`: input `{name}` is "
                          f"{entry.on(axis)}@{axis}; the sequence split is made from whole "
                          "inputs", span, help=f"leave `{name}` whole (B) on `{axis}`")
                return
            seq = info.type.shape[1].as_int() if info.type.rank > 1 else None
            if seq is not None and seq % size:
                self.fail("E352", f"`sequence_parallel {axis}`: the sequence of `{name}` "
                          f"({seq}) does not divide by {axis} = {size}", span)
                return

    def auto_spec(self) -> ParallelSpec:
        """A placeholder plan (data parallel over every device) for `parc tune` to replace."""
        mesh = (("dp", self.hw.devices),)
        sbp = self.sbp([], mesh)
        return ParallelSpec(self.hw, mesh, sbp, "auto", ScheduleSpec("1f1b"), (),
                            self.node.span, auto=True)

    # ---- mesh
    def mesh(self, node: ast.Mesh) -> tuple[tuple[str, int], ...] | None:
        evaluator = SettingEvaluator(self.err)
        axes: list[tuple[str, int]] = []
        for axis in node.axes:
            size = evaluator.value(axis.size)
            if size is POISON:
                return None
            if not is_int(size) or size < 1:
                self.fail("E300", f"mesh axis `{axis.name}` needs a positive integer size, not "
                          f"{show(size)}", axis.span)
                return None
            if any(name == axis.name for name, _ in axes):
                self.fail("E300", f"mesh axis `{axis.name}` is given twice", axis.span)
                return None
            axes.append((axis.name, size))
        total = 1
        for _, size in axes:
            total *= size
        if total != self.hw.devices:
            shape = " x ".join(f"{n}={s}" for n, s in axes)
            self.fail("E301", f"the mesh ({shape}) has {total} devices but hardware "
                      f"`{self.hw.name}` has {self.hw.devices}", node.span,
                      help="the product of the axis sizes must equal the device count")
            return None
        return tuple(axes)

    # ---- schedule
    def schedule(self, node: ast.Schedule | None, mesh) -> ScheduleSpec | None:
        pp = dict(mesh).get(PIPELINE_AXIS, 1)
        if node is None:
            return ScheduleSpec("1f1b")
        if node.name not in SCHEDULES:
            guess = closest(node.name, SCHEDULES)
            return self.fail("E330", f"unknown schedule `{node.name}`", node.span,
                             help=f"did you mean `{guess}`?" if guess else
                             "schedules: " + ", ".join(SCHEDULES))
        params = SCHEDULES[node.name]
        evaluator = SettingEvaluator(self.err)
        names = list(params)
        if len(node.args) > len(names):
            return self.fail("E331", f"`{node.name}` takes {len(names)} argument"
                             f"{'s' * (len(names) != 1)}, got {len(node.args)}", node.span)
        bound = dict(zip(names, (evaluator.value(a) for a in node.args)))
        for kw in node.kwargs:
            if kw.name not in params:
                return self.fail("E331", f"`{node.name}` has no argument `{kw.name}`", kw.span,
                                 help=f"its arguments: {', '.join(names) or 'none'}")
            bound[kw.name] = evaluator.value(kw.value)
        values = {**params, **bound}
        if any(v is POISON for v in values.values()):
            self.ok = False
            return None
        m = self.train.microbatches
        if node.name == "interleaved":
            v = values["virtual"]
            if not is_int(v) or v < 1:
                return self.fail("E332", f"`virtual` must be a positive integer, not {show(v)}",
                                 node.span)
            if pp < 2:
                return self.fail("E334", "`interleaved` needs a pipeline: give the mesh a `pp` "
                                 "axis of size 2 or more", node.span)
            if m % pp:
                return self.fail("E332", f"interleaved needs microbatches divisible by pp: {m} "
                                 f"microbatches over pp = {pp}", node.span,
                                 help=f"use {max(pp, m // pp * pp)} microbatches")
            layers = self.model.num_layers
            if layers % (pp * v):
                return self.fail("E333", f"interleaved needs the {layers} layers divisible by "
                                 f"pp * virtual = {pp * v}", node.span)
            return ScheduleSpec("interleaved", virtual=v, span=node.span)
        if node.name in V_SHAPED:
            if pp < 2:
                return self.fail("E337", f"`{node.name}` needs a pipeline: it places two stages "
                                 "on each `pp` rank in a V; give the mesh a `pp` axis of size 2 "
                                 "or more", node.span)
            layers = self.model.num_layers
            if layers % (2 * pp):
                return self.fail("E338", f"`{node.name}` places two stages on each of the "
                                 f"pp = {pp} ranks and needs the {layers} layers divisible by "
                                 f"2 * pp = {2 * pp}", node.span)
            return ScheduleSpec(node.name, virtual=2, span=node.span)
        if node.name == "skip":
            ratio, seed = values["ratio"], values["seed"]
            if not is_number(ratio) or not 0 <= ratio < 1:
                return self.fail("E335", f"`ratio` must be in [0, 1), not {show(ratio)}",
                                 node.span)
            if not is_int(seed) or seed < 0:
                return self.fail("E335", "`seed` must be a non-negative integer", node.span)
            paths, reorder = values["paths"], values["reorder"]
            given = None
            if isinstance(paths, list):
                given = self._given_paths(paths, pp, m, node.span)
                if given is None:
                    return None
                paths = Ident("given")
            elif not isinstance(paths, Ident) or paths.name not in ("search", "greedy"):
                return self.fail("E335", "`paths` must be `search`, `greedy` or a list of "
                                 f"each microbatch's stages, not {show(paths)}", node.span)
            if not isinstance(reorder, bool):
                return self.fail("E335", f"`reorder` must be true or false, not "
                                 f"{show(reorder)}", node.span)
            if pp < 3:
                return self.fail("E335", "skip needs pp >= 3: the first and last stages are "
                                 "never skipped", node.span)
            if reorder and paths.name != "search":
                return self.fail("E335", "`reorder` is a choice of the path search: with "
                                 f"`paths = {paths.name}` it would do nothing", node.span)
            if paths.name != "given" and pp >= 3:
                middle, total = pp - 2, skip_count(pp, m, float(ratio))
                if -(-total // middle) >= m:  # the most skipped stage, every microbatch
                    return self.fail("E335", f"`ratio` {ratio:g} over {middle} middle "
                                     f"stages and {m} microbatches skips a stage for every "
                                     "microbatch: its layers would never train", node.span,
                                     help=f"use a ratio below {1 - 1 / m:.2f}")
            if reorder and pp < 4:
                return self.fail("E335", "`reorder` needs pp >= 4: it swaps two adjacent "
                                 "middle stages", node.span)
            return ScheduleSpec("skip", ratio=float(ratio), seed=seed, span=node.span,
                                paths=paths.name, reorder=reorder, given=given)
        return ScheduleSpec(node.name, span=node.span)

    def _given_paths(self, paths: list, pp: int, m: int, span):
        """`paths = [[0, 1, 3], [0, 2, 3], ...]`: every microbatch's stages, checked as the
        runtime needs them (the search's balance rules are the user's to keep or break)."""
        if len(paths) != m:
            return self.fail("E335", f"`paths` needs one list of stage numbers per "
                             f"microbatch: {m} microbatches, {len(paths)} lists given", span)
        last = pp - 1
        for i, path in enumerate(paths):
            if not isinstance(path, list) or not path or not all(is_int(s) for s in path):
                return self.fail("E335", f"`paths` item {i} must be a non-empty list of stage "
                                 "numbers", span)
            where = f"`paths` item {i} ({path})"
            if path[0] != 0 or path[-1] != last:
                return self.fail("E335", f"{where} must start at stage 0 and end at stage "
                                 f"{last}: the first and last stages are never skipped", span)
            if len(set(path)) != len(path) or not all(0 <= s <= last for s in path):
                return self.fail("E335", f"{where} visits a stage twice or one outside "
                                 f"0..{last}", span)
            back = [j for j in range(len(path) - 1) if path[j] > path[j + 1]]
            if len(back) > 1 or any(path[j] - path[j + 1] != 1 for j in back):
                return self.fail("E335", f"{where} may swap two adjacent stages once at most",
                                 span)
        unvisited = [s for s in range(1, last) if not any(s in p for p in paths)]
        if unvisited:
            return self.fail("E335", f"`paths` never visit stage {unvisited[0]}: its layers "
                             "would never train", span)
        return tuple(tuple(p) for p in paths)

    # ---- sbp
    def sbp(self, rules: list[ast.SbpRule], mesh) -> dict[str, NdSbp]:
        axes = [name for name, _ in mesh if name != PIPELINE_AXIS]
        sizes = dict(mesh)
        named = [(i.name, i.type) for i in self.model.inputs]
        named += [(p.name, p.type) for p in self.model.params]
        chosen: dict[str, tuple[ast.SbpRule, tuple[Sbp, ...]]] = {}
        exact: dict[str, ast.SbpRule] = {}
        inputs = {i.name for i in self.model.inputs}
        auto: list[str] = []
        for rule in rules:
            per_axis = self.rule_entries(rule, axes)
            is_auto = any(e.kind == "auto" for e in rule.entries)
            for pattern in rule.patterns:
                regex = glob_regex(pattern)
                matches = [n for n, _ in named if regex.match(n)]
                if is_auto and per_axis is not None:
                    given = [n for n in matches if n in inputs and n not in chosen]
                    if "*" not in pattern and given:
                        self.fail("E317", f"`{pattern}: auto`: `{given[0]}` is an input; the "
                                  "search chooses parameters' layouts, inputs' are given",
                                  rule.span, help=f"give `{given[0]}` an SBP, e.g. S(0)@dp")
                    # a glob's inputs stay whole (B), as with no rule
                    matches = [n for n in matches if n not in inputs]
                    auto += [n for n in matches if n not in chosen]
                if not matches and pattern != "*":
                    guess = closest(pattern, [n for n, _ in named])
                    self.fail("E316", f"`{pattern}` matches no input or parameter", rule.span,
                              help=f"did you mean `{guess}`?" if guess else None)
                if "*" not in pattern and pattern in exact and matches:
                    first = exact[pattern].span
                    self.fail("E312", f"`{pattern}` is annotated twice (first at "
                              f"{first.line}:{first.col})", rule.span)
                exact.setdefault(pattern, rule)
                for name in matches:
                    if name not in chosen and per_axis is not None:
                        chosen[name] = (rule, per_axis)
        out: dict[str, NdSbp] = {}
        problems: dict[tuple, list[str]] = {}  # one diagnostic per rule and kind of problem
        batch_splits: set[tuple[str, ...]] = set()  # axes that split the batch dimension
        for name, type_ in named:
            rule, per_axis = chosen.get(name, (None, tuple(BROADCAST for _ in axes)))
            is_input = any(i.name == name for i in self.model.inputs)
            found = None
            for axis, sbp in zip(axes, per_axis):
                found = found or self.entry_problem(name, type_, axis, sbp, is_input)
            if found is None:
                found = self.split_problem(name, type_, dict(zip(axes, per_axis)), sizes,
                                           batch_splits)
            if found is not None:
                problems.setdefault((id(rule), found[0]), []).append((rule, found))
            out[name] = NdSbp(tuple(zip(axes, per_axis)))
        for found in problems.values():
            rule, (code, message) = found[0]
            more = len(found) - 1
            suffix = f" (and {more} more name{'s' * (more != 1)} this rule matches)" if more else ""
            self.fail(code, message + suffix, rule.span)
        self.batch_split(batch_splits, sizes)
        self.auto_sbp = tuple(n for n, _ in named if n in set(auto))
        return out

    def rule_entries(self, rule: ast.SbpRule, axes: list[str]) -> tuple[Sbp, ...] | None:
        given: dict[str, Sbp] = {}
        if any(e.kind == "auto" for e in rule.entries):
            if len(rule.entries) > 1:
                self.fail("E317", "`auto` stands alone: the search chooses the layout on "
                          "every axis the batch is not split over", rule.span,
                          help="give the SBP or `auto`, not both")
                return None
            return tuple(BROADCAST for _ in axes)  # until the search chooses
        for entry in rule.entries:
            if entry.axis == PIPELINE_AXIS:
                self.fail("E311", f"`{entry}`: the pipeline axis `pp` carries no SBP; stages "
                          "decide what lives where", entry.span)
                return None
            if entry.axis is not None and entry.axis not in axes:
                guess = closest(entry.axis, axes)
                self.fail("E310", f"`{entry}` names axis `{entry.axis}`, which is not in the mesh",
                          entry.span, help=f"did you mean `{guess}`?" if guess else
                          "mesh axes: " + ", ".join(axes or ["none besides pp"]))
                return None
            sbp = Sbp(entry.kind, entry.dim)
            for axis in [entry.axis] if entry.axis else axes:
                if axis in given and given[axis] != sbp:
                    self.fail("E312", f"contradicting annotations for axis `{axis}`: "
                              f"{given[axis]} and {sbp}", entry.span)
                    return None
                given[axis] = sbp
        return tuple(given.get(axis, BROADCAST) for axis in axes)

    def entry_problem(self, name, type_, axis, sbp: Sbp, is_input) -> tuple[str, str] | None:
        """(code, message) when `sbp` cannot apply to this tensor on this axis."""
        if sbp.kind == "P":
            what = "an input" if is_input else "a parameter"
            return "E313", f"`{name}` is {what}, which cannot be a partial sum (P); use S or B"
        if sbp.kind == "S" and not -type_.rank <= sbp.dim < type_.rank:
            return "E314", (f"`{name}`: S({sbp.dim})@{axis} splits dim {sbp.dim}, but `{name}` "
                             f"is {type_} (rank {type_.rank})")
        return None

    def split_problem(self, name, type_, per_axis: dict[str, Sbp], sizes,
                      batch_splits: set) -> tuple[str, str] | None:
        """(code, message) when a dim does not split evenly over all the axes splitting it."""
        by_dim: dict[int, list[str]] = {}
        for axis, sbp in per_axis.items():
            if sbp.kind == "S":
                by_dim.setdefault(sbp.dim % type_.rank, []).append(axis)
        for dim_index, split_axes in sorted(by_dim.items()):
            ways = 1
            for axis in split_axes:
                ways *= sizes[axis]
            dim = type_.shape[dim_index]
            if "batch" in dim.symbols:
                batch_splits.add(tuple(split_axes))  # the batch size is checked once
                continue
            if dim.divisible_by(ways) is False:
                over = " x ".join(f"`{a}`" for a in split_axes)
                return "E315", (f"`{name}`: dim {dim_index} of size {dim} does not split evenly "
                                f"over {over} ({ways} devices)")
        return None

    def batch_split(self, splits: set[tuple[str, ...]], sizes) -> None:
        """The batch divides into microbatches times every split of the batch dimension."""
        m = self.train.microbatches
        if self.train.batch % m:
            return  # reported with the train block
        for split_axes in sorted(splits):
            need = m
            for axis in split_axes:
                need *= sizes[axis]
            if self.train.batch % need:
                over = " x ".join(f"{a} = {sizes[a]}" for a in split_axes)
                self.fail("E340", f"batch {self.train.batch} does not divide into {m} "
                          f"microbatches x {over}", self.train.span,
                          help=f"use a batch that is a multiple of {need}")
                return

    # ---- stages
    def stages(self, autos, stages: list[ast.Stage], mesh, schedule):
        pp = dict(mesh).get(PIPELINE_AXIS, 1)
        count = pp * (schedule.virtual if schedule else 1)
        scopes = [s.name for s in self.model.scopes]
        if autos and stages:
            self.fail("E320", "give either `stages auto` or explicit `stage` lines, not both",
                      stages[0].span)
            return "auto"
        if not stages:
            if len(scopes) < count:
                self.fail("E325", f"{count} stages need at least {count} top-level calls in the "
                          f"model; it has {len(scopes)}", (autos[0] if autos else self.node).span)
            return "auto"
        result: list[tuple[str, ...]] = []
        for expected, stage in enumerate(stages):
            if stage.index != expected:
                self.fail("E320", f"stages must be numbered 0, 1, ... in order; expected stage "
                          f"{expected}, found stage {stage.index}", stage.span)
                return "auto"
            names: list[str] = []
            for item in stage.items:
                found = self.stage_item(item)
                if found is None:
                    return "auto"
                names.extend(found)
            result.append(tuple(names))
        if len(result) != count:
            virtual = schedule.virtual if schedule else 1
            product = f"pp = {pp}" + (f" x virtual = {virtual}" if virtual > 1 else "")
            given = f"only {len(result)}" if len(result) < count else str(len(result))
            self.fail("E321", f"the plan needs {count} stages ({product}); {given} "
                      f"{'is' if len(result) == 1 else 'are'} given", stages[-1].span)
            return "auto"
        flat = [n for stage in result for n in stage]
        seen: set[str] = set()
        for stage, node in zip(result, stages):
            for name in stage:
                if name in seen:
                    self.fail("E324", f"`{name}` is in two stages", node.span)
                    return "auto"
                seen.add(name)
        missing = [n for n in scopes if n not in seen]
        if missing:
            self.fail("E324", f"`{missing[0]}` is in no stage", stages[-1].span,
                      help="stages must cover every top-level call of the model once")
            return "auto"
        if flat != scopes:
            for want, got in zip(scopes, flat):
                if want != got:
                    node = stages[next(k for k, st in enumerate(result) if got in st)]
                    self.fail("E324", f"stages list `{got}` where the model runs `{want}`: stages "
                              "must follow the model's order", node.span)
                    break
            return "auto"
        return tuple(result)

    def stage_item(self, item: ast.StageItem) -> list[str] | None:
        bases = {s.base for s in self.model.scopes}
        matching = [s for s in self.model.scopes if s.base == item.name]
        if not matching:
            guess = closest(item.name, bases)
            self.fail("E322", f"`{item.name}` is not a top-level call of the model", item.span,
                      help=f"did you mean `{guess}`?" if guess else
                      "top-level calls: " + ", ".join(sorted(bases)))
            return None
        if item.start is None:
            return [s.name for s in matching]
        evaluator = SettingEvaluator(self.err, dict(self.model.hyper))
        start = evaluator.value(item.start)
        stop = evaluator.value(item.stop) if item.stop is not None else \
            (start + 1 if is_int(start) else start)
        if not is_int(start) or not is_int(stop):
            self.fail("E323", "stage ranges need integer bounds", item.span)
            return None
        indexed = {s.index: s.name for s in matching if s.index is not None}
        wanted = list(range(start, stop))
        absent = [i for i in wanted if i not in indexed]
        if not wanted or absent:
            valid = f"{min(indexed)}..{max(indexed) + 1}" if indexed else "none"
            self.fail("E323", f"`{item.name}[{start}..{stop}]` is outside the calls the model "
                      f"makes (`{item.name}` indices {valid})", item.span)
            return None
        return [indexed[i] for i in wanted]

