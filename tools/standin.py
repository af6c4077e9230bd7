"""Export an untrained Restorer of any size: a stand-in for timing and parity checks only.

Its weights are random (seeded) and its gates open, so every part of the graph (GRU,
folding, synthesis, interpolation) does real work; it restores nothing and is never
shipped. Used by scripts/gpu-check to time a big model on a GPU machine without carrying
a large file there::

    python3 -m tools.standin models-standin/big.onnx --hidden 768 --layers 3
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from tools.export import export_and_check
from tools.model import Restorer, count_parameters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    model = Restorer(args.hidden, args.layers)
    with torch.no_grad():
        model.gate.fill_(0.5)
        model.out.bias.zero_()
    model.eval()
    n = count_parameters(model)
    report = export_and_check(model, args.output, f"standin-{args.hidden}x{args.layers}",
                              f"UNTRAINED stand-in for timing ({n} parameters); not a restoration model")
    print(json.dumps({"output": args.output, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
