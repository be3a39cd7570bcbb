"""The README's "Writing a layer" example runs as written."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_writing_a_layer_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Writing a layer", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace = {}
    exec(compile(code, "README.md: Writing a layer", "exec"), namespace)
    assert capsys.readouterr().out == "(3, 8)\n"   # the hook fired, once
    net, x = namespace["net"], namespace["x"]
    assert "forward" not in net[1].__dict__          # handle.remove() took it off
    # the example's Swish against a float64 reference
    swish = namespace["Swish"](0.5, dtype=np.float64)
    x64 = x.astype(np.float64)
    y = swish(x64)
    np.testing.assert_allclose(y, x64 / (1 + np.exp(-0.5 * x64)), rtol=1e-12)
