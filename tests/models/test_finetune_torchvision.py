"""The README's "Fine-tuning a PyTorch model" example, run as written on a
seeded torchvision-architecture ResNet-18's weights (tests download
nothing): only the head trains, and the result goes back into the torch
architecture computing the same function."""
import pathlib
import re

import numpy as np
import pytest

import convcore

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_example():
    """The first python block of the README's fine-tuning section."""
    if not README.exists():
        pytest.skip("README.md is not beside the tests (an installed convcore)")
    text = README.read_text(encoding="utf-8")
    section = text.split("## Fine-tuning a PyTorch model", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_fine_tuning_example(rng):
    torch = pytest.importorskip("torch")
    import torchvision_peers
    tmodel = torchvision_peers.resnet(18, num_classes=1000, seed=5)
    state = tmodel.state_dict()
    before = {k: v.numpy().copy() for k, v in state.items()}
    images = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    scope = {"state": state, "images": images, "labels": labels}
    previous = convcore.set_num_threads(1)
    try:
        exec(compile(readme_example(), str(README), "exec"), scope)
    finally:
        convcore.set_num_threads(previous)
    model, back, history = scope["model"], scope["back"], scope["history"]
    assert scope["head"] == "fc" and history["epoch"] == [1, 2, 3]
    # training the head lowered the training loss
    assert history["train_loss"][-1] < history["train_loss"][0]
    # the head trained, the backbone's weights did not (nor got gradients)
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert p.grad is not None
        else:
            assert p.grad is None, name
    assert back["fc.weight"].shape == (10, 512)
    for k, v in back.items():
        if k.endswith(("weight", "bias")) and not k.startswith("fc."):
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    # back in the torch architecture with the new head: the same function
    tmodel.fc = torch.nn.Linear(512, 10)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})
    x = images[:4]
    with convcore.no_grad():
        y = model.eval()(x)
    with torch.no_grad():
        ty = tmodel.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5 * np.abs(ty).max())
