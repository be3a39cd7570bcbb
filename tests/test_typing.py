"""convcore is typed (PEP 561): it ships py.typed, mypy passes on the
package with the pyproject configuration, and a user's code that calls
the public API type-checks, while a wrong call is caught."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import convcore

pytest.importorskip("mypy")

HOME = pathlib.Path(convcore.__file__).resolve().parent.parent
PYPROJECT = HOME / "pyproject.toml"


def mypy(*args, cwd, tmp_path):
    env = dict(os.environ)
    if PYPROJECT.is_file():
        # A source tree (built in place): show mypy where convcore is. An
        # installed convcore is found in site-packages, which mypy refuses
        # on MYPYPATH.
        env["MYPYPATH"] = str(HOME)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"),
         "--no-error-summary", *args], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600)


def test_package_ships_the_py_typed_marker():
    assert (HOME / "convcore" / "py.typed").is_file()
    if PYPROJECT.is_file():  # a source tree: the marker is declared as package data
        assert '"py.typed"' in PYPROJECT.read_text()


@pytest.mark.skipif(not PYPROJECT.is_file(), reason="needs the source tree's pyproject.toml")
def test_mypy_passes_on_the_package(tmp_path):
    out = mypy("--config-file", str(PYPROJECT), cwd=HOME, tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


USER_CODE = textwrap.dedent("""
    from typing import Dict, List, Optional

    import numpy as np
    import convcore
    from convcore import F, models, nn, optim
    from convcore.training import History, fit

    gen: np.random.Generator = convcore.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.zeros((6, 1, 2, 2), np.float32)
    history: History = fit(model, nn.CrossEntropyLoss(), opt, (x, np.zeros(6, np.int64)),
                           epochs=1, progress=False)
    y: np.ndarray = F.linear(np.zeros((2, 3)), np.zeros((4, 3)))
    masked, mask = F.dropout(y, 0.5, return_mask=True)
    norm: float = optim.clip_grad_norm_(model.parameters(), 1.0)
    state = convcore.load("weights.npz")
    include: str = convcore.get_include()

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2))
    out: np.ndarray = net.forward(x)
    grad_x: Optional[np.ndarray] = net.backward(np.ones_like(out))
    conv = nn.Conv2d(1, 4, 3, stride=(1, 1), padding="same", rng=0)
    conv_out: np.ndarray = conv.forward(x)
    conv_grad: Optional[np.ndarray] = conv.backward(conv_out)
    bn_out: np.ndarray = nn.BatchNorm2d(4, momentum=None).eval().forward(conv_out)
    weights: List[nn.Parameter] = net.parameters()
    first: nn.Module = net[0]
    sd: Dict[str, np.ndarray] = net.state_dict()
    missing: List[str] = net.load_state_dict(sd, strict=False).missing_keys
    same: nn.Sequential = net.train(False)
    y2: np.ndarray = F.conv2d(x, np.zeros((4, 1, 3, 3), np.float32), None, 1, "same")
    gx, gw, gb = F.conv2d_backward(y2, x, np.zeros((4, 1, 3, 3), np.float32), padding=1)
    pooled: np.ndarray = F.max_pool2d(x, 2)
    pooled2, where = F.max_pool2d(x, 2, return_indices=True)
    idx: np.ndarray = where
    loss_value = F.cross_entropy(np.zeros((6, 2)), np.zeros(6, np.int64))
    resnet: nn.Sequential = models.resnet18(num_classes=10, rng=0)
    vgg: nn.Sequential = models.vgg11(num_classes=10, input_size=32)
    by_name: nn.Module = models.get_model("lenet_digits")
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    sched.step()
    lrs: List[float] = sched.get_last_lr()
    plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5)
    plateau.step(0.9)
""")


# A user's mypy reads an installed convcore's types but reports no errors
# inside it (site-packages); with the source tree on MYPYPATH,
# --follow-imports=silent does the same.
AS_INSTALLED = "--follow-imports=silent"


def test_user_code_calling_the_public_api_type_checks(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    out = mypy(AS_INSTALLED, "--strict-optional", "user.py", cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("line, complaint", [
    ('convcore.manual_seed("0")', 'incompatible type "str"; expected "int"'),
    ("n: int = convcore.get_include()", 'incompatible types in assignment'),
    ("optim.SGD(model.parameters(), lr='0.1')", 'incompatible type "str"; expected "float"'),
    ("fit(model, nn.CrossEntropyLoss(), opt, (x, x), epochs='2')",
     'incompatible type "str"; expected "int"'),
    ('nn.Conv2d("3", 8, 3)', 'incompatible type "str"; expected "int"'),
    ("nn.Linear(4, 2, bias='yes')", 'incompatible type "str"; expected "bool"'),
    ("s: str = net.state_dict()", "incompatible types in assignment"),
    ("n: int = conv.forward(x)", "incompatible types in assignment"),
    ("conv_grad.sum()", 'item "none" of "ndarray'),
    ("F.conv2d(x, x, groups=2.0)", 'incompatible type "float"; expected "int"'),
    ("p: np.ndarray = F.max_pool2d(x, 2, return_indices=True)", "incompatible types in assignment"),
    ("models.resnet18(num_classes='10')", 'incompatible type "str"; expected "int"'),
    ("models.vgg16(input_size=2.5)", 'incompatible type "float"'),
    ("optim.lr_scheduler.StepLR(opt, step_size=1.5)", 'incompatible type "float"; expected "int"'),
])
def test_wrong_calls_are_caught(tmp_path, line, complaint):
    (tmp_path / "user.py").write_text(USER_CODE + line + "\n")
    out = mypy(AS_INSTALLED, "user.py", cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 1
    assert complaint in out.stdout.lower() or complaint in out.stdout, out.stdout
