"""The optional `onnx` dependency, imported only when convcore.onnx is used,
so `import convcore.onnx` works without it."""

INSTALL_HINT = 'pip install "convcore[onnx]"'


def require_onnx():
    """The `onnx` module, or ImportError saying how to install it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"convcore.onnx needs the onnx package: {INSTALL_HINT}") from e
    return onnx
