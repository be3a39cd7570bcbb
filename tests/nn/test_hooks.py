"""Forward pre-hooks, forward hooks and full backward hooks (convcore.nn.hooks):
what they receive and may replace, handles, and that they fire for
children inside Sequential/Residual/Concat and in fused positions, where
the step then runs the hooked module on its own."""
import copy

import numpy as np
import pytest

import convcore
from convcore import nn
from convcore.models._common import ResidualReLU
from convcore.testing import GradcheckError, gradcheck


@pytest.fixture(autouse=True)
def fusion_on():
    previous = nn.set_fusion(True)
    yield
    nn.set_fusion(previous)


def recorder(log, tag):
    """Hooks that append (tag, kind, arrays copied) to `log` and change nothing."""
    def pre(m, args):
        log.append((tag, "pre", args[0].copy()))

    def fwd(m, args, out):
        log.append((tag, "forward", out.copy()))

    def bwd(m, grad_input, grad_output):
        log.append((tag, "backward", grad_input[0].copy(), grad_output[0].copy()))
    return pre, fwd, bwd


def test_hooks_see_and_replace_values(rng):
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 2))
    w, b = lin.weight.data, lin.bias.data
    seen = {}
    h1 = lin.register_forward_pre_hook(lambda m, args: (2 * args[0],))
    h2 = lin.register_forward_hook(lambda m, args, out: out + 1)
    h3 = lin.register_full_backward_hook(
        lambda m, gi, go: seen.update(gi=gi, go=go) or (3 * gi[0],))
    y = lin(x)
    np.testing.assert_allclose(y, (2 * x) @ w.T + b + 1, rtol=1e-12)
    gx = lin.backward(g)
    assert seen["go"][0] is g
    np.testing.assert_allclose(seen["gi"][0], g @ w, rtol=1e-12)
    np.testing.assert_allclose(gx, 3 * g @ w, rtol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, g.T @ (2 * x), rtol=1e-12)
    for h in (h1, h2, h3):
        h.remove()
        h.remove()   # twice: harmless
    assert "forward" not in lin.__dict__ and "backward" not in lin.__dict__
    np.testing.assert_allclose(lin(x), x @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(lin.backward(g), g @ w, rtol=1e-12)


def test_pre_hook_may_return_one_value_and_hooks_run_in_order(rng):
    relu = nn.ReLU(dtype=np.float64)
    order = []
    relu.register_forward_pre_hook(lambda m, a: order.append(1) or -a[0])
    relu.register_forward_pre_hook(lambda m, a: order.append(2))
    x = rng.standard_normal(5)
    np.testing.assert_array_equal(relu(x), np.maximum(-x, 0))
    assert order == [1, 2]


def test_bad_hooks_are_refused(rng):
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    with pytest.raises(TypeError, match="register_forward_hook: hook must be callable"):
        lin.register_forward_hook(3)
    h = lin.register_full_backward_hook(lambda m, gi, go: (np.zeros((1, 1)),))
    lin(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(1, 1\) for grad_input of shape \(4, 3\)"):
        lin.backward(np.ones((4, 2)))
    h.remove()
    lin.register_full_backward_hook(lambda m, gi, go: np.zeros((4, 3)))
    lin(rng.standard_normal((4, 3)))
    with pytest.raises(TypeError, match="must return None or a tuple of 1"):
        lin.backward(np.ones((4, 2)))


def conv_bn_relu(dtype=np.float64):
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=dtype, rng=0),
                         nn.BatchNorm2d(3, dtype=dtype), nn.ReLU(dtype=dtype),
                         nn.Flatten(), nn.Linear(3 * 16, 2, dtype=dtype, rng=1), nn.ReLU(dtype=dtype))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("hooked", [0, 1, 2, 4, 5])
def test_hooks_fire_on_fused_children_and_results_stay(rng, mode, hooked):
    x = rng.standard_normal((2, 2, 4, 4))
    g = rng.standard_normal((2, 2))
    plain = getattr(conv_bn_relu(), mode)()
    nn.set_fusion(False)
    y_ref = plain(x)
    gx_ref = plain.backward(g)
    nn.set_fusion(True)

    net = getattr(conv_bn_relu(), mode)()
    log = []
    pre, fwd, bwd = recorder(log, hooked)
    handles = [net[hooked].register_forward_pre_hook(pre),
               net[hooked].register_forward_hook(fwd),
               net[hooked].register_full_backward_hook(bwd)]
    y = net(x)
    gx = net.backward(g)
    assert [e[1] for e in log] == ["pre", "forward", "backward"]
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(net.parameters(), plain.parameters()):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    # the hook saw the layer's own output and gradients (the unfused values)
    unhooked = getattr(conv_bn_relu(), mode)()
    nn.set_fusion(False)
    captured = {}
    unhooked[hooked].register_forward_hook(lambda m, a, o: captured.update(out=o.copy()))
    unhooked[hooked].register_full_backward_hook(
        lambda m, gi, go: captured.update(gi=gi[0].copy(), go=go[0].copy()))
    unhooked(x)
    unhooked.backward(g)
    np.testing.assert_allclose(log[1][2], captured["out"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log[2][2], captured["gi"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log[2][3], captured["go"], rtol=1e-10, atol=1e-12)
    nn.set_fusion(True)
    # hooks removed: the fused path comes back
    for h in handles:
        h.remove()
    net(x)
    steps = net.__dict__["_cache"]
    assert steps is not None and all(getattr(s, "_cache", ("x",))[0] != "unfused"
                                     for s in steps)


def test_hook_added_after_a_fused_forward_is_not_skipped_silently(rng):
    net = conv_bn_relu()
    x = rng.standard_normal((2, 2, 4, 4))
    y = net(x)
    net[2].register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(RuntimeError, match="ReLU got a hook .* after a forward that ran "
                                           "it fused; .* run forward again"):
        net.backward(np.ones_like(y))
    calls = []
    net[2].register_full_backward_hook(lambda m, gi, go: calls.append(1))
    net.backward(np.ones_like(net(x)))
    assert calls == [1]


def test_hooks_fire_inside_residual_concat_and_a_resnet_block(rng):
    x = rng.standard_normal((2, 2, 3, 3))
    for make in (
            lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 1, dtype=np.float64, rng=0),
                                              nn.BatchNorm2d(2, dtype=np.float64))),
            lambda: nn.Concat(nn.Conv2d(2, 2, 1, dtype=np.float64, rng=0),
                              nn.BatchNorm2d(2, dtype=np.float64)),
            lambda: ResidualReLU(nn.Sequential(nn.Conv2d(2, 2, 1, dtype=np.float64, rng=0),
                                               nn.BatchNorm2d(2, dtype=np.float64)))):
        ref, net = make(), make()
        y_ref = ref(x)
        gx_ref = ref.backward(np.ones_like(y_ref))
        targets = [m for m in net.modules() if not m._modules]
        log = []
        for i, m in enumerate(targets):
            pre, fwd, bwd = recorder(log, i)
            m.register_forward_hook(fwd)
            m.register_full_backward_hook(bwd)
        y = net(x)
        gx = net.backward(np.ones_like(y))
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-12)
        fired = {(tag, kind) for tag, kind, *_ in log}
        assert fired == {(i, k) for i in range(len(targets)) for k in ("forward", "backward")}


def test_a_hook_keeping_the_gradient_sees_it_unchanged(rng):
    # Linear -> BN -> ReLU: the fused BN+ReLU backward may overwrite the
    # gradient it receives in place; the hooked Linear's is a copy.
    kept = []
    net = nn.Sequential(nn.Conv2d(2, 2, 1, dtype=np.float64, rng=0),
                        nn.BatchNorm2d(2, dtype=np.float64), nn.ReLU(dtype=np.float64),
                        nn.Conv2d(2, 2, 1, dtype=np.float64, rng=1))
    net[3].register_full_backward_hook(lambda m, gi, go: kept.append((gi[0], gi[0].copy())))
    net.backward(np.ones_like(net(rng.standard_normal((2, 2, 3, 3)))))
    np.testing.assert_array_equal(kept[0][0], kept[0][1])


def test_hooked_module_copies_and_gradchecks(rng):
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    outputs = []
    lin.register_forward_hook(lambda m, a, out: outputs.append(out))
    twin = copy.deepcopy(lin)
    assert twin.forward.__self__ is twin   # the copy's hooks wrap the copy
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(twin(x), lin(x), rtol=1e-12)
    assert gradcheck(lin, x) and outputs
    # a hook that changes the output without a matching backward is caught
    lin.register_forward_hook(lambda m, a, out: 2 * out)
    with pytest.raises(GradcheckError, match="input 0 at"):
        gradcheck(lin, x)


def test_convert_sync_batchnorm_drops_hooks_bound_to_the_old_module(rng):
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    bn.register_forward_hook(lambda m, a, out: 0 * out)
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bn))[0]
    assert "forward" not in sync.__dict__   # as torch: a new module, no hooks
    x = rng.standard_normal((3, 2, 2, 2))
    assert np.abs(sync(x)).sum() > 0


def test_hooks_receive_what_torch_hooks_receive(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 2))
    ours = nn.Linear(3, 2, dtype=np.float64, rng=0)
    theirs = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    got = {}
    for tag, m, conv in (("ours", ours, np.asarray),
                         ("torch", theirs, lambda t: t.detach().numpy())):
        m.register_forward_pre_hook(lambda m, a, tag=tag: (2 * a[0],))
        m.register_forward_hook(
            lambda m, a, o, tag=tag, conv=conv: got.update({tag + "out": conv(o)}) or o - 1)
        m.register_full_backward_hook(
            lambda m, gi, go, tag=tag, conv=conv: got.update(
                {tag + "gi": conv(gi[0]), tag + "go": conv(go[0])}) or (gi[0] * 3,))
    y = ours(x)
    gx = ours.backward(g)
    tx = torch.from_numpy(x).requires_grad_()
    ty = theirs(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    # what the backward hook made of grad_input is what backward returns ...
    np.testing.assert_allclose(gx, 3 * got["torchgi"], rtol=1e-12)
    # ... but, without autograd, the pre-hook's doubling is not differentiated:
    # torch's input gradient goes on through it (documented difference)
    np.testing.assert_allclose(2 * gx, tx.grad.numpy(), rtol=1e-12)
    for key in ("out", "gi", "go"):
        np.testing.assert_allclose(got["ours" + key], got["torch" + key], rtol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


def test_a_forward_set_on_the_instance_is_kept_around_hooks(rng):
    relu = nn.ReLU(dtype=np.float64)
    relu.forward = lambda x: np.abs(x)   # the user's own, before any hook
    outs = []
    h = relu.register_forward_hook(lambda m, a, out: outs.append(out))
    x = rng.standard_normal(4)
    np.testing.assert_array_equal(relu(x), np.abs(x))
    np.testing.assert_array_equal(outs[0], np.abs(x))
    h.remove()
    assert relu.__dict__["forward"] is not None and "_user_forward" not in relu.__dict__
    np.testing.assert_array_equal(relu(x), np.abs(x))
