"""convcore.onnx: ONNX export and import (floor 4, beside the model zoo).

    export(model, input_shape, path)   convcore Module -> .onnx    export.py
    load(path_or_model)                .onnx -> Graph              load.py
    Graph                              layers wired as a DAG,      graph.py
                                       trainable (forward, backward,
                                       parameters), exportable again

`onnx` is optional (pip install "convcore[onnx]"): it is imported when
export or load runs, so importing this package never needs it.
"""
from convcore.onnx.export import export
from convcore.onnx.graph import Graph
from convcore.onnx.load import SUPPORTED_OPS, load

__all__ = ["export", "load", "Graph", "SUPPORTED_OPS"]
