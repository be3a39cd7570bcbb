"""Loss modules cast class weights to the dtype of the logits they weigh."""
import numpy as np

from convcore import F, nn


def test_cross_entropy_weight_given_as_list_works_with_float32_logits(rng):
    logits = rng.standard_normal((6, 3)).astype(np.float32)
    target = np.array([0, 1, 2, 2, 1, 0])
    weight = [1.0, 2.0, 0.5]
    loss = nn.CrossEntropyLoss(weight=weight)
    value = loss(logits, target)
    expect = F.cross_entropy(logits, target, weight=np.array(weight, np.float32))
    assert abs(value - expect) < 1e-6
    grad = loss.backward()
    assert grad.dtype == np.float32 and grad.shape == logits.shape


def test_bce_pos_weight_list(rng):
    logits = rng.standard_normal((4, 2)).astype(np.float32)
    target = (rng.random((4, 2)) > 0.5).astype(np.float32)
    loss = nn.BCEWithLogitsLoss(pos_weight=[2.0, 3.0])
    value = loss(logits, target)
    expect = F.binary_cross_entropy_with_logits(logits, target, pos_weight=np.array([2.0, 3.0], np.float32))
    assert abs(value - expect) < 1e-6
