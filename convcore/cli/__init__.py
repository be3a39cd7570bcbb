"""`convcore` command line (floor 5): argument parsing and printing only.

Each command lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; this module only dispatches:

    convcore info    convcore/cli/info.py     version, build, threads, CPU
    convcore train   convcore/cli/train.py    train a zoo network, report
    convcore bench   convcore/bench/          algorithm and network benchmarks
                     convcore/cli/args.py     argparse checkers they share
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from convcore import bench
from convcore._runtime import logs as _logs
from convcore.cli import info, train

# name -> (module with add_arguments/run, one-line help)
COMMANDS = {
    "info": (info, "version, build flags, OpenMP/BLAS threads, CPU"),
    "bench": (bench, "compare convolution algorithms (and PyTorch)"),
    "train": (train, "train a CNN on the embedded digits or MNIST/CIFAR-10"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convcore",
        description="convcore: CPU convolution engine for training CNNs.")
    # The version of the convcore that runs (which may not be the one an
    # installer recorded, e.g. a source tree on PYTHONPATH).
    from convcore import __version__
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad arguments: usage + exit 2
    try:
        with _logs.console(force=True):  # library messages (convcore.* loggers) are output
            return args._run(args) or 0
    except BrokenPipeError:
        # `convcore ... | head`: the reader left. Point stdout at /dev/null
        # so the interpreter's final flush does not raise again, and exit
        # as a process killed by SIGPIPE would (128 + 13).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

