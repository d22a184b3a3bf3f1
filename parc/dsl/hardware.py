"""Checks `hardware` items and instantiates presets into HardwareSpecs."""

from __future__ import annotations

from . import ast
from .names import Entity, Namespace, resolve, suggestion
from .settings import (
    POISON,
    SettingEvaluator,
    fraction,
    ident,
    is_int,
    is_number,
    positive_int,
    quantity,
    read_settings,
)
from .spec import HardwareSpec


def _regions(values, span, err, key):
    """`regions [0, 0, 1, 1]`: the region of each node, numbered from 0."""
    if len(values) != 1 or not isinstance(values[0], list) or not values[0] or \
            not all(is_int(v) and v >= 0 for v in values[0]):
        return err("E146", "`regions` takes one list: the region of each node, numbered "
                   "from 0, e.g. `regions [0, 0, 1, 1]`", span)
    found = sorted(set(values[0]))
    if found != list(range(len(found))):
        return err("E146", f"`regions` must number the regions 0..{len(found) - 1} without "
                   f"gaps, got {', '.join(map(str, found))}", span)
    return tuple(values[0])


def _per_pair(kind: str):
    """One figure for every pair of regions, or one per pair in the order (0, 1), (0, 2), ...,
    (1, 2), ...: a list of `value unit`, comma separated."""
    def rule(values, span, err, key):
        out = []
        for value in values:
            one = quantity(kind)([value], span, err, key)
            if one is POISON:
                return POISON
            out.append(one)
        return tuple(out)
    return rule


SCHEMA = {
    "device": ident("cpu", "cuda"),
    "devices": positive_int,
    "devices_per_node": positive_int,
    "memory": quantity("bytes"),
    "flops_f32": quantity("flops"),
    "flops_bf16": quantity("flops"),
    "mem_bw": quantity("bandwidth"),
    "intra_bw": quantity("bandwidth"),
    "intra_latency": quantity("time"),
    "inter_bw": quantity("bandwidth"),
    "inter_latency": quantity("time"),
    "efficiency": fraction,
    "op_overhead": quantity("time"),
    "regions": _regions,
    "region_bw": _per_pair("bandwidth"),
    "region_latency": _per_pair("time"),
}
REQUIRED = ("devices", "memory", "flops_f32", "mem_bw", "intra_bw", "intra_latency")


def instantiate(name: str, node: ast.HardwareDef, args, kwargs, span, err,
                evaluator_env=None) -> HardwareSpec | None:
    """A HardwareSpec from a hardware definition and the arguments bound to its header."""
    env = dict(evaluator_env or {})
    header = [p.name for p in node.params]
    if len(args) > len(header):
        err("E113", f"hardware `{node.name}` takes {len(header)} argument"
            f"{'s' * (len(header) != 1)}, got {len(args)}", span)
        return None
    bound = dict(zip(header, args))
    for key, value, kspan in kwargs:
        if key not in header:
            err("E114", f"hardware `{node.name}` has no parameter `{key}`", kspan or span,
                help=f"its parameters: {', '.join(header) or 'none'}")
            return None
        bound[key] = value
    defaults = SettingEvaluator(err, env)
    for param in node.params:
        if param.name in bound:
            env[param.name] = bound[param.name]
        elif param.default is not None:
            env[param.name] = defaults.value(param.default)
        else:
            err("E113", f"hardware `{node.name}` needs argument `{param.name}`", span)
            return None
        defaults.env = env
        if env[param.name] is POISON:
            return None
        if not is_number(env[param.name]):
            err("E146", f"hardware argument `{param.name}` must be a number", span)
            return None
    where = f"hardware `{node.name}`"
    values = read_settings(node.settings, SCHEMA, SettingEvaluator(err, env), err, where)
    spans = values.pop("__spans__")
    missing = [key for key in REQUIRED if key not in spans]
    if missing:
        err("E149", f"{where} is missing {', '.join(f'`{k}`' for k in missing)}", node.span)
        return None
    if any(key not in values for key in spans):
        return None  # a setting was wrong and already reported
    devices = values["devices"]
    per_node = values.get("devices_per_node", devices)
    if devices % per_node:
        err("E146", f"{devices} devices do not fill nodes of {per_node}",
            spans.get("devices_per_node", node.span))
        return None
    if devices > per_node and "inter_bw" not in values:
        err("E149", f"{where} has {devices // per_node} nodes but no `inter_bw` and "
            "`inter_latency`", node.span)
        return None
    links = _region_links(values, spans, node, per_node, devices, where, err)
    if links is POISON:
        return None
    return HardwareSpec(
        name=name, device=values.get("device", "cuda"), devices=devices,
        devices_per_node=per_node, memory=values["memory"], flops_f32=values["flops_f32"],
        flops_bf16=values.get("flops_bf16", values["flops_f32"]), mem_bw=values["mem_bw"],
        intra_bw=values["intra_bw"], intra_latency=values["intra_latency"],
        inter_bw=values.get("inter_bw"), inter_latency=values.get("inter_latency"),
        efficiency=values.get("efficiency", 1.0), span=node.span,
        op_overhead=values.get("op_overhead", 0.0), **links)


def _region_links(values, spans, node, per_node, devices, where, err):
    """`regions`, `region_bw` and `region_latency` as HardwareSpec fields, checked together."""
    given = [k for k in ("regions", "region_bw", "region_latency") if k in values]
    if not given:
        return {}
    single = "regions" in values and max(values["regions"]) == 0  # one region: no pairs
    if len(given) < 3 and not single:
        missing = [f"`{k}`" for k in ("regions", "region_bw", "region_latency")
                   if k not in values]
        return err("E149", f"{where} sets {', '.join(f'`{k}`' for k in given)} but not "
                   f"{', '.join(missing)}: regions need all three", spans[given[0]])
    regions = values["regions"]
    nodes = devices // per_node
    if len(regions) != nodes:
        return err("E146", f"`regions` names {len(regions)} node{'s' * (len(regions) != 1)} "
                   f"but {where} has {nodes} ({devices} devices, {per_node} per node)",
                   spans["regions"])
    if "inter_bw" not in values:
        return err("E149", f"{where} has regions but no `inter_bw` and `inter_latency` (the "
                   "link between nodes of one region)", node.span)
    count = max(regions) + 1
    pairs = count * (count - 1) // 2
    out = {"regions": regions}
    for key, field in (("region_bw", "region_bw"), ("region_latency", "region_latency")):
        if single:
            continue
        figures = values[key]
        if len(figures) == 1:
            figures = figures * pairs
        if len(figures) != pairs:
            return err("E146", f"`{key}` takes one figure, or one per pair of the {count} "
                       f"regions ({pairs}: (0, 1), (0, 2), ...), not {len(values[key])}",
                       spans[key])
        out[field] = figures
    return out


def hardware_of(entity: Entity, spaces: dict[str, Namespace], err) -> HardwareSpec | None:
    """The HardwareSpec a named hardware item stands for."""
    node = entity.node
    if isinstance(node, ast.HardwareDef):
        return instantiate(node.name, node, (), (), node.span, err)
    preset, why = resolve(spaces[entity.module], node.preset)
    if preset is None or preset.kind != "hardware" or not isinstance(preset.node,
                                                                      ast.HardwareDef):
        help = suggestion(spaces[entity.module], node.preset.dotted)
        err("E110", why or f"`{node.preset.dotted}` is not a hardware preset", node.preset.span,
            help=help)
        return None
    evaluator = SettingEvaluator(err)
    args = [evaluator.value(a) for a in node.args]
    kwargs = [(k.name, evaluator.value(k.value), k.span) for k in node.kwargs]
    if any(v is POISON for v in args) or any(v is POISON for _, v, _ in kwargs):
        return None
    return instantiate(node.name, preset.node, args, kwargs, node.span, err)
