"""A user's numpy matmul between convcore calls, with and without convcore
stopping the OpenBLAS pool it leaves spinning (convcore._runtime.blas_pools).

Each setting runs in a fresh process. In it, zoo networks alternate two
kinds of call, each after the same 0.3 s busy pause: a plain call, and a
call right after a 256x256 float32 numpy matmul (which OpenBLAS runs on
its threads, whose workers then spin for about 0.1 s); the measurement is
convcore.bench.after_matmul:

    python benchmarks/blas_pools.py [--rounds N] [--markdown PATH]

Reported: the median of each kind and their ratio (1.0: the matmul costs
convcore nothing). Results: benchmarks/results/blas_pools.md.
"""
import argparse
import json
import os
import subprocess
import sys

SETTINGS = {
    "pools stopped (default)": {},
    "pools left spinning (CONVCORE_STOP_BLAS_POOLS=0)": {"CONVCORE_STOP_BLAS_POOLS": "0"},
}
# (network, workload, batch, input size or None for the network's own)
CASES = [("resnet18", "eval", 1, None), ("mobilenet_v1", "eval", 1, None),
         ("resnet20", "eval", 16, None), ("resnet18", "train", 8, 112)]

CHILD = r"""
import json, sys
import numpy as np
import convcore
from convcore.bench import networks as N
from convcore.bench.after_matmul import times_after_matmul
rounds, cases = int(sys.argv[1]), json.loads(sys.argv[2])
convcore.set_num_threads(2)
out = []
for net, workload, batch, size in cases:
    spec = N.NETWORKS[net]
    model, shape = N.build_model(spec, input_size=size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + tuple(shape)).astype(np.float32)
    if workload == "train":
        y = rng.integers(0, spec.num_classes, batch)
        call = N._Trainer(model, None, None, x, y).convcore_step
    else:
        model.eval()
        call = lambda: N._eval(model, x)
    call(); call()
    med = {k: v * 1e3 for k, v in times_after_matmul(call, rounds).items()}
    out.append({"case": f"{spec.label} {workload} b{batch}" + (f" {size}x{size}" if size else ""),
                **med})
print(json.dumps(out))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9,
                        help="calls of each kind per case (median kept)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table here")
    args = parser.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = ["| setting | workload | plain ms | after a numpy matmul ms | ratio |",
             "|---|---|---:|---:|---:|"]
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != "CONVCORE_STOP_BLAS_POOLS"}
        env.update(extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", CHILD, str(args.rounds), json.dumps(CASES)],
                              env=env, capture_output=True, text=True, check=True)
        for r in json.loads(proc.stdout.strip().splitlines()[-1]):
            lines.append(f"| {name} | {r['case']} | {r['plain']:.2f} | {r['after_matmul']:.2f} "
                         f"| {r['after_matmul'] / r['plain']:.2f} |")
        print("\n".join(lines[-len(CASES):]), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
