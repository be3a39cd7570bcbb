"""`convcore bench`: argument parsing and output; the timing is engine.py's."""
import argparse
import sys

import numpy as np

import convcore
from convcore.cli.args import positive_int
from convcore.bench import configs as cfgs
from convcore.bench import engine, networks, report

# Per preset: (minimum rounds, seconds per configuration, seconds for the
# whole run or None, GEMM peak size). The quick preset trades precision for
# its one-minute promise: past its deadline a configuration gets only its
# minimum rounds, however loaded the machine.
_PRESET_TIMING = {"quick": (3, 0.6, 35.0, 768)}
_DEFAULT_TIMING = (5, 3.0, None, 1024)



def _padding(text):
    if text in ("same", "valid"):
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"padding must be an int >= 0, 'same' or 'valid', got {text!r}")
    if v < 0:
        raise argparse.ArgumentTypeError(f"padding must be >= 0, got {v}")
    return v


def _groups(text):
    if text in ("dw", "depthwise"):
        return "dw"
    return str(positive_int(text))


def add_arguments(parser):
    sel = parser.add_argument_group("what to measure (default: --quick)")
    which = sel.add_mutually_exclusive_group()
    # --quick is outside the group: it also shortens --suite networks
    sel.add_argument("--quick", action="store_true",
                     help="24 sampled grid points, small shapes (< 1 minute); with --suite "
                          "networks: fewer rounds and a subset of the networks")
    which.add_argument("--full", action="store_true",
                       help="the whole stride x padding x dilation x kernel x groups grid")
    # type= runs before the choices check, so an old alias passes as its new
    # name without being listed in --help.
    which.add_argument("--suite", choices=cfgs.SUITES + ("networks",), type=cfgs.suite_name,
                       help="a preset or real network layers: layers (the reference "
                            "layer grid), zoo (all networks' layers), one network's layers, or "
                            "networks (whole networks against PyTorch: see below)")
    sel.add_argument("--stride", type=positive_int, nargs="+", metavar="S",
                     help="grid: these strides only (builds a custom grid)")
    sel.add_argument("--padding", type=_padding, nargs="+", metavar="P",
                     help="grid: these paddings (ints, 'same')")
    sel.add_argument("--dilation", type=positive_int, nargs="+", metavar="D",
                     help="grid: these dilations only")
    sel.add_argument("--kernel", type=positive_int, nargs="+", metavar="K",
                     help="grid: these kernel sizes (square) only")
    sel.add_argument("--groups", type=_groups, nargs="+", metavar="G",
                     help="grid: group counts, or 'dw' for depthwise")
    sel.add_argument("--batch", type=positive_int, help="batch size (grids and layer suites)")
    sel.add_argument("--channels", type=positive_int, help="grid: in = out channels")
    sel.add_argument("--size", type=positive_int, help="grid: input height = width")
    sel.add_argument("--sample", type=positive_int, metavar="N",
                     help="measure N configurations sampled to cover every grid value")
    sel.add_argument("--algorithms", nargs="+", metavar="A",
                     choices=list(convcore.conv_algorithms()),
                     default=list(convcore.conv_algorithms()),
                     help=f"algorithms to compare (default: all of {', '.join(convcore.conv_algorithms())})")
    sel.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="precision of inputs and weights (default float32)")
    sel.add_argument("--forward-only", action="store_true", help="skip the backward passes")
    sel.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    sel.add_argument("--weight-scale", type=float, default=1.0, metavar="X",
                     help="scale the random weights (e.g. 1e-39 for a denormal benchmark)")
    sel.add_argument("--flush-denormal", action="store_true",
                     help="treat denormal floats as zero (convcore.set_flush_denormal, and "
                          "torch.set_flush_denormal for PyTorch)")

    tm = parser.add_argument_group("threads and timing")
    tm.add_argument("--threads", type=positive_int,
                    help=f"threads for convcore and PyTorch (default {convcore.get_num_threads()})")
    tm.add_argument("--threads-sweep", action="store_true",
                    help="repeat everything at 1, 2, ..., --threads threads")
    tm.add_argument("--repeats", type=positive_int,
                    help="minimum timed rounds per configuration (default 3 for --quick, else 5)")
    tm.add_argument("--budget", type=float, metavar="SECONDS",
                    help="keep adding rounds while a configuration has taken less than "
                         "this (default 0.6 for --quick, else 3)")
    tm.add_argument("--warmup", type=positive_int, default=1, help="warm-up calls per pass")
    tm.add_argument("--min-time", type=float, default=0.0002, metavar="SECONDS",
                    help="minimum duration of one sample: faster calls are batched")

    out = parser.add_argument_group("output (the table always goes to stdout)")
    out.add_argument("--json", metavar="PATH", help="all results and raw samples as JSON")
    out.add_argument("--csv", metavar="PATH", help="one row per configuration and implementation")
    out.add_argument("--markdown", metavar="PATH", help="report with a machine/version header")
    out.add_argument("--plot", metavar="PATH", help="PNG chart (needs matplotlib)")
    out.add_argument("--title", help="title of the Markdown report and chart")
    out.add_argument("--note", help="a line added to the Markdown header")
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    networks.add_arguments(parser)
    parser.set_defaults(_bench_parser=parser)


def select_configs(args):
    """(preset name, list of BenchConfig) from the parsed arguments."""
    custom_axes = {k: v for k, v in (("stride", args.stride), ("padding", args.padding),
                                     ("dilation", args.dilation), ("kernel", args.kernel),
                                     ("groups", args.groups)) if v}
    if args.suite:
        preset = args.suite
    elif args.full:
        preset = "full"
    elif custom_axes or args.channels or args.size:
        preset = "custom"
    else:
        preset = "quick"
    if preset in ("quick", "full", "custom"):
        base = cfgs.FULL_SHAPE if preset == "full" else cfgs.QUICK_SHAPE
        configs = cfgs.grid_configs(custom_axes, batch=args.batch or base[0],
                                    channels=args.channels or base[1],
                                    size=args.size or base[2], suite=preset)
        if preset == "quick" and not args.sample:
            configs = cfgs.sample_configs(configs, cfgs.QUICK_COUNT)
    else:
        configs = cfgs.suite_configs(preset, args.batch)
    if args.sample:
        configs = cfgs.sample_configs(configs, args.sample)
    return preset, configs


def _flush_denormals():
    """FTZ/DAZ for both libraries, so the comparison stays like for like."""
    convcore.set_flush_denormal(True)
    try:
        import torch
    except ImportError:
        return
    torch.set_flush_denormal(True)


# options that only the networks suite reads
_NETWORK_FLAGS = ("networks", "workloads", "orders", "train_batch", "input_size")


def _usage_error(args, message):
    parser = getattr(args, "_bench_parser", None)
    if parser is not None:
        parser.error(message)  # usage + exit status 2
    print(f"convcore bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(args):
    if args.quick and args.full:
        _usage_error(args, "argument --quick: not allowed with argument --full")
    if args.quick and args.suite and args.suite != "networks":
        _usage_error(args, f"argument --quick: not allowed with --suite {args.suite} "
                           "(only with --suite networks)")
    if args.suite == "networks" or args.profile:
        if args.suite and args.suite != "networks":
            _usage_error(args, f"--profile times a whole network; not allowed with "
                               f"--suite {args.suite}")
        grid = [f"--{k}" for k in ("stride", "padding", "dilation", "kernel", "groups",
                                   "channels", "size", "sample", "batch") if getattr(args, k)]
        if grid or args.full or args.threads_sweep or args.plot:
            flags = grid + [f for f, on in (("--full", args.full), ("--threads-sweep",
                                            args.threads_sweep), ("--plot", args.plot)) if on]
            _usage_error(args, f"{', '.join(flags)} cannot be combined with --suite networks")
        return networks.run(args)
    used = [f"--{k.replace('_', '-')}" for k in _NETWORK_FLAGS if getattr(args, k)]
    if used:
        _usage_error(args, f"{', '.join(used)} only apply to --suite networks")
    grid_flags = [f"--{k}" for k in ("stride", "padding", "dilation", "kernel", "groups",
                                     "channels", "size") if getattr(args, k)]
    if grid_flags and args.suite:
        print(f"convcore bench: error: {', '.join(grid_flags)} build a parameter grid "
              f"and cannot be combined with --suite {args.suite}", file=sys.stderr)
        return 2
    if args.plot and not report.have_matplotlib():
        print("convcore bench: --plot needs matplotlib, which is not installed "
              "(pip install matplotlib, or pip install 'convcore[plot]')", file=sys.stderr)
        return 2
    preset, configs = select_configs(args)
    if not configs:
        print("convcore bench: no valid configuration in the requested grid", file=sys.stderr)
        return 2
    repeats, budget, deadline, peak_size = _PRESET_TIMING.get(preset, _DEFAULT_TIMING)
    repeats = args.repeats or repeats
    budget = args.budget if args.budget is not None else budget
    min_time = args.min_time
    top = args.threads or convcore.get_num_threads()
    threads_list = list(range(1, top + 1)) if args.threads_sweep else [top]

    if args.flush_denormal:
        _flush_denormals()
    from tqdm import tqdm
    bar = tqdm(total=len(configs) * len(threads_list), file=sys.stderr, unit="cfg",
               desc=f"bench {preset}", disable=args.no_progress, dynamic_ncols=True)
    try:
        result = engine.run_benchmark(
            configs, args.algorithms, np.dtype(args.dtype), threads_list, repeats,
            args.warmup, min_time, budget, not args.no_torch, not args.forward_only,
            args.weight_scale, peak_size, deadline=None if args.budget is not None else deadline,
            progress=None if args.no_progress else bar)
    finally:
        bar.close()
    result["dtype"] = args.dtype
    summary = engine.summarize(result["rows"])

    print(report.text_table(result["rows"]))
    print()
    for line in report.summary_lines(result, summary):
        print(line)

    title = args.title or f"convcore benchmark: {preset}"
    meta = report.machine_info(threads_list, result["torch"])
    meta.update({"preset": preset, "dtype": args.dtype, "repeats": repeats,
                 "warmup": args.warmup, "min_time_s": min_time, "budget_s": budget,
                 "weight_scale": args.weight_scale, "flush_denormal": args.flush_denormal})
    written = []
    if args.json:
        report.to_json(args.json, meta, result, summary)
        written.append(args.json)
    if args.csv:
        report.to_csv(args.csv, result["rows"])
        written.append(args.csv)
    if args.markdown:
        report.to_markdown(args.markdown, meta, result, summary, title, args.note)
        written.append(args.markdown)
    if args.plot:
        report.to_png(args.plot, result["rows"], title)
        written.append(args.plot)
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr)
    return 0 if all(r["agree"] for r in result["rows"]) else 1
