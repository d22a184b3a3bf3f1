"""The `parc` command line: a thin layer over parc.api."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import api
from .dsl.diagnostics import ParcError

COMMANDS = ("check", "ir", "plan", "schedule", "compile", "run", "tune", "calibrate",
            "report", "export", "eval", "sample")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parc", description="A declarative pipeline compiler "
                                     "for distributed training.")
    parser.add_argument("--version", action="version", version=f"parc {api.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="check .par files and report every error")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    check.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override a model parameter")
    ir = sub.add_parser("ir", help="print the dataflow IR after any pass")
    ir.add_argument("file", metavar="FILE", help="a .par spec, or a .ir file printed by parc")
    ir.add_argument("--after", choices=api.PASS_NAMES, default="boxing",
                    help="stop after this pass (default: boxing; partition adds stages)")
    ir.add_argument("--run", default=None, metavar="PASS,...",
                    help="for a .ir file: the passes to run on it")
    ir.add_argument("--json", action="store_true", help="the JSON form")
    ir.add_argument("--scope", metavar="GLOB", help="only ops in scopes matching GLOB")
    ir.add_argument("--summary", action="store_true",
                    help="a table of ops, parameters, FLOPs and communication per layer")
    ir.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    ir.add_argument("--explain-sbp", action="store_true",
                    help="why the sbp search placed each `auto` parameter as it did")
    ir.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a model parameter")
    plan = sub.add_parser("plan", help="stages, predicted times and memory per rank")
    plan.add_argument("file", metavar="FILE")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="override a model parameter")
    schedule = sub.add_parser("schedule", help="the per-rank pipeline timeline")
    schedule.add_argument("file", metavar="FILE")
    schedule.add_argument("--json", action="store_true", help="actions per rank and figures")
    schedule.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace")
    schedule.add_argument("--svg", metavar="OUT.svg", help="write an SVG timeline")
    schedule.add_argument("--compare", action="store_true",
                          help="step time, bubble and memory of every schedule family")
    schedule.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                          help="override a model parameter")
    compile_ = sub.add_parser("compile", help="write the distributed training program")
    compile_.add_argument("file", metavar="FILE")
    compile_.add_argument("-o", "--out", required=True, metavar="DIR")
    compile_.add_argument("--kernels", choices=("triton", "torch"), default=None,
                          help="kernel backend (default: the spec's; Triton on CUDA)")
    compile_.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                          help="run each stage under torch.compile (default: the spec's)")
    compile_.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                          help="override a model parameter")
    run = sub.add_parser("run", help="compile and train with torchrun",
                         description="Compile FILE and train it with torchrun. Arguments after "
                         "`--` go to torchrun (multi-node flags such as --nnodes).")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--steps", type=int, default=None, help="default: the spec's steps")
    run.add_argument("--out", default=None, metavar="DIR",
                     help="metrics.jsonl and the program go here (default: runs/<model>)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a model parameter")
    run.add_argument("--kernels", choices=("triton", "torch"), default=None,
                     help="kernel backend (default: the spec's; Triton on CUDA, torch on CPU)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="run each stage under torch.compile (default: the spec's)")
    run.add_argument("--trace", default=None, metavar="DIR",
                     help="record every action of the last step on every rank into DIR")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest checkpoint (any plan may have written it)")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="also write the step metrics into DIR for TensorBoard")
    run.add_argument("--force", action="store_true",
                     help="launch a plan that `parc plan` reports over memory")
    tune = sub.add_parser("tune", help="find the fastest parallel plan that fits memory")
    tune.add_argument("file", metavar="FILE")
    tune.add_argument("--devices", type=int, default=None, help="default: the hardware's")
    tune.add_argument("--top", type=int, default=5, metavar="K")
    tune.add_argument("--explain", action="store_true",
                      help="why the winner beats the runner-up, and which matmuls its "
                      "tensor parallelism pairs")
    tune.add_argument("--write", action="store_true",
                      help="replace the file's parallel block with the winner")
    tune.add_argument("--json", action="store_true")
    tune.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="override a model parameter")
    calibrate = sub.add_parser("calibrate", help="measure this machine as a hardware block",
                               description="Measure this machine as a hardware block. Arguments "
                               "after `--` go to torchrun (multi-node flags such as --nnodes).")
    calibrate.add_argument("--devices", type=int, default=None,
                           help="processes to measure with, per node (default: one per GPU, "
                           "or 4 on CPU)")
    calibrate.add_argument("--name", default="calibrated", help="the hardware block's name")
    calibrate.add_argument("-o", "--out", default=None, metavar="FILE",
                           help="write the block to FILE (default: print it)")
    report = sub.add_parser("report", help="a traced run against its prediction")
    report.add_argument("dir", metavar="DIR", help="the directory given to `parc run --trace`")
    export = sub.add_parser("export", help="a checkpoint's parameters as one torch state dict")
    export.add_argument("checkpoint", metavar="DIR",
                        help="a checkpoint directory (or the `to` directory: its latest)")
    export.add_argument("-o", "--out", required=True, metavar="FILE.pt",
                        help="the state dict, or with --hf a new directory")
    export.add_argument("--hf", action="store_true",
                        help="a Hugging Face model directory (safetensors and config.json) "
                        "that transformers loads: GPT-2's or LLaMA's layout")
    evaluate = sub.add_parser("eval", help="loss and perplexity of a checkpoint on tokens")
    evaluate.add_argument("file", metavar="FILE", help="the spec the checkpoint trained")
    evaluate.add_argument("--checkpoint", required=True, metavar="DIR",
                          help="a checkpoint directory (or the `to` directory: its latest)")
    evaluate.add_argument("--data", default=None, metavar="FILE.bin",
                          help="a token file (default: the spec's eval data or held-out tenth)")
    evaluate.add_argument("--batches", type=int, default=None, metavar="K",
                          help="batches of the train block's size (default: eval_batches)")
    omit = evaluate.add_mutually_exclusive_group()
    omit.add_argument("--skip", default=None, metavar="STAGES",
                      help="omit these pipeline stages of the spec's plan (comma-separated "
                      "indices, as `parc plan` numbers them; never the first or the last)")
    omit.add_argument("--skip-ratio", type=float, default=None, metavar="R",
                      help="omit k = R * n (rounded half up; 0 <= R < 1) of the n middle "
                      "stages 1..n, spread evenly: stages 1 + floor((i + 1/2) * n / k) for "
                      "i < k (R = 0.5 of 6 middle stages omits 2, 4, 6)")
    sample = sub.add_parser("sample", help="text from a checkpoint of a language model")
    sample.add_argument("checkpoint", metavar="DIR",
                        help="a checkpoint directory (or the `to` directory: its latest)")
    sample.add_argument("--prompt", default="", help="the text to continue")
    sample.add_argument("--tokens", type=int, default=100, help="how many tokens to add")
    sample.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    sample.add_argument("--top-k", type=int, default=None, metavar="K")
    sample.add_argument("--seed", type=int, default=0)
    return parser


def _cmd_eval(args) -> int:
    from .inference import Loaded, describe_skip, evaluate, parse_stages

    if args.batches is not None and args.batches < 1:
        print("parc eval: --batches must be at least 1", file=sys.stderr)
        return 1
    skip = parse_stages(args.skip) if args.skip is not None else None
    model = Loaded(args.checkpoint, args.file, skip, args.skip_ratio)
    loss = evaluate(model, args.data, args.batches)
    print(f"loss {loss:.4f}  perplexity {math.exp(min(loss, 700.0)):.2f}")
    if skip is not None or args.skip_ratio is not None:
        print(describe_skip(model))
    return 0


def _cmd_sample(args) -> int:
    from .inference import Loaded, sample

    if args.tokens < 1 or args.temperature < 0 or (args.top_k is not None and args.top_k < 1):
        print("parc sample: --tokens and --top-k must be at least 1, --temperature at least 0",
              file=sys.stderr)
        return 1
    print(sample(Loaded(args.checkpoint), args.prompt, args.tokens, args.temperature,
                 args.top_k, args.seed))
    return 0


def _cmd_export(args) -> int:
    if args.hf:
        out = api.export_hf(args.checkpoint, args.out)
        print(f"wrote a Hugging Face model to {out} (from_pretrained loads it)")
        return 0
    print(f"wrote {api.export(args.checkpoint, args.out)} parameters to {args.out}")
    return 0


def _cmd_report(args) -> int:
    from rich.table import Table

    rows, svg, figures = api.report_run(args.dir)
    table = Table(title=f"predicted vs measured ({args.dir})")
    for column in ("", "predicted", "measured"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        table.add_row(*row)
    api.console(sys.stdout).print(table)
    target = Path(args.dir) / "timeline.svg"
    api.write_atomic(target, svg)
    print(f"side-by-side timeline: {target}")
    return 0


def _cmd_calibrate(args) -> int:
    block = api.calibrate(args.devices, args.name, args.torchrun)
    if args.out:
        api.write_atomic(args.out, block)
        print(f"wrote {args.out}")
    else:
        print(block, end="")
    return 0


def _cmd_tune(args) -> int:
    import time

    start = time.perf_counter()
    spec, result = api.tune_file(args.file, args.devices, args.top, api.parse_overrides(args.set))
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps(api.tune_json(spec, result), indent=1))
        return 0 if result.ranked else 1
    out = api.console(sys.stdout)
    out.print(api.tune_table(spec, result, seconds))
    if not result.ranked:
        out.print("no plan fits; the closest were over memory by:", style="bold red")
        for cand, over in result.rejected[:5]:
            out.print(f"  {cand.label()}: {over / 1e9:.2f} GB", markup=False, highlight=False)
        return 1
    if result.rejected:
        cand, over = result.rejected[0]
        out.print(f"{len(result.rejected)} plans do not fit memory; the closest, "
                  f"{cand.label()}, is over by {over / 1e9:.2f} GB", markup=False,
                  highlight=False)
    if args.explain and len(result.ranked) > 1:
        for line in api.explain(result.ranked[0], result.ranked[1]):
            out.print(line, markup=False, highlight=False)
    shown = list(zip(("winner", "runner-up"), result.ranked[:2] if args.explain else []))
    for label, scored in shown:
        if scored.candidate.tp > 1:
            out.print(f"the {label}'s tensor parallelism (tp={scored.candidate.tp}), from the "
                      "graph:", markup=False, highlight=False)
            for line in api.tp_explain(spec, scored):
                out.print(f"  {line}", markup=False, highlight=False)
    block = api.winner_block(spec, result)
    if args.write:
        api.write_parallel_block(args.file, block)
        out.print(f"wrote the winner into {args.file}", highlight=False)
    else:
        out.print("the winner, to paste into the spec:", style="bold")
        out.print(block, markup=False, highlight=False)
    return 0


def _cmd_compile(args) -> int:
    state = api.program_target(args.out)
    out = api.compile_program(args.file, args.out, api.parse_overrides(args.set), args.kernels,
                              args.compile)
    how = {"new": "a new directory", "empty": "into the empty directory",
           "program": "replacing the parc program there"}[state]
    print(f"wrote {out} ({how}): " + ", ".join(sorted(p.name for p in out.iterdir())))
    print("launch: " + (out / "launch.txt").read_text().strip())
    return 0


def _cmd_run(args) -> int:
    return api.run(args.file, args.steps, args.out, api.parse_overrides(args.set),
                   args.torchrun, args.resume, args.trace, args.kernels, args.force,
                   tensorboard=args.tensorboard, compile=args.compile)


def _cmd_plan(args) -> int:
    plan = api.plan(args.file, api.parse_overrides(args.set))
    if args.json:
        print(json.dumps(api.plan_json(plan), indent=1))
        return 0
    out = api.console(sys.stdout)
    for table in api.plan_tables(plan):
        out.print(table)
    out.print("why the boundaries fall where they do:", style="bold")
    for line in plan.partition.explanation:
        out.print("  " + line, markup=False, highlight=False)
    if plan.shared_params:
        out.print(f"parameters kept on several stages (gradients summed across them): "
                  f"{', '.join(plan.shared_params)}", markup=False, highlight=False)
    return 0 if plan.fits else 1


def _cmd_schedule(args) -> int:
    spec = api.resolve_auto(api.check(args.file, api.parse_overrides(args.set)))
    out = api.console(sys.stdout)
    if args.compare:
        out.print(api.comparison_table(api.comparison(spec)))
        return 0
    plan = api.make_plan(spec)
    if args.trace:
        api.write_atomic(args.trace, json.dumps(api.chrome_trace(
            plan.simulation, plan.schedule.num_ranks, spec.model.name)))
    if args.svg:
        title = f"{spec.model.name}: {plan.schedule.family}, p={plan.schedule.num_ranks}, " \
                f"m={plan.schedule.num_microbatches}"
        api.write_atomic(args.svg, api.timeline_svg(plan.simulation, plan.schedule.num_ranks,
                                                    title))
    if args.json:
        print(json.dumps(api.schedule_json(plan), indent=1))
        return 0
    out.print(f"{plan.schedule.family}: {plan.schedule.num_ranks} ranks, "
              f"{plan.schedule.num_stages} stages, {plan.schedule.num_microbatches} microbatches;"
              f" predicted step {plan.predicted_step_s * 1e3:.3f} ms, bubble "
              f"{plan.simulation.bubble_ratio:.1%}", highlight=False)
    out.print(api.timeline_text(plan.simulation, plan.schedule.num_ranks))
    return 0


def _cmd_ir(args) -> int:
    if args.explain_sbp:
        from .compiler.sbp_explain import explain_lines

        result = api.sbp_search(args.file, api.parse_overrides(args.set))
        if result is None:
            print("no `auto` rule: every layout is annotated (or B)")
            return 0
        print("\n".join(explain_lines(result)))
        return 0
    graph = api.ir(args.file, after=args.after, run=args.run, verify=args.verify,
                   overrides=api.parse_overrides(args.set))
    if args.json:
        print(json.dumps(api.graph_to_json(graph), indent=1))
        return 0
    out = api.console(sys.stdout)
    if args.summary:
        out.print(api.summary_table(graph))
    else:
        api.show_graph(graph, out, args.scope)
    return 0


def _cmd_check(args) -> int:
    status = 0
    overrides = api.parse_overrides(args.set)
    for path in args.files:
        try:
            spec = api.check(path, overrides, plan=True)
        except ParcError as exc:
            print(exc.render(), file=sys.stderr)
            status = 1
            continue
        if not args.quiet:
            print(f"{spec.file}: ok{api.summary(spec)}")
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:  # what follows goes to torchrun
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    args.torchrun = passthrough
    try:
        commands = {"check": _cmd_check, "ir": _cmd_ir, "plan": _cmd_plan,
                    "schedule": _cmd_schedule, "compile": _cmd_compile, "run": _cmd_run,
                    "tune": _cmd_tune, "calibrate": _cmd_calibrate, "report": _cmd_report,
                    "export": _cmd_export, "eval": _cmd_eval, "sample": _cmd_sample}
        return commands[args.command](args)
    except ParcError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `parc ir ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
