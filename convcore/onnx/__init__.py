"""convcore.onnx: ONNX export and import (floor 4, beside the model zoo).

    export(model, input_shape, path)   convcore Module -> .onnx    export.py
    load(path_or_model)                .onnx -> convcore Module    load.py
        layers where the graph is a chain, a Graph module (graph.py) where
        it branches; trainable either way (forward, backward, parameters)

`onnx` is optional (pip install "convcore[onnx]"): it is imported when
export or load runs, so importing this package never needs it.
"""
from convcore.onnx.export import export
from convcore.onnx.load import SUPPORTED_OPS, load

__all__ = ["export", "load", "SUPPORTED_OPS"]
