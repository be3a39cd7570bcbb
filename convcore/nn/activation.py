"""Elementwise activations. Each caches the one array its backward reads
(the output for ReLU/ReLU6/Sigmoid/Tanh, the input for LeakyReLU/Softplus)."""
import numpy as np

from convcore.functional.activations import (
    leaky_relu, leaky_relu_backward, relu, relu6, relu6_backward, relu_backward, sigmoid,
    sigmoid_backward, softplus, softplus_backward, tanh, tanh_backward)
from convcore.nn._common import layer_dtype
from convcore.nn.module import Module


class _Elementwise(Module):
    def __init__(self, dtype=np.float32):
        super().__init__()
        layer_dtype(dtype, type(self).__name__)  # no parameters; checked for uniformity

    def output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(_Elementwise):
    def forward(self, x):
        y = relu(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self._saved()
        return relu_backward(grad_y, y)


class ReLU6(_Elementwise):
    """min(max(x, 0), 6), MobileNet-v2's activation (torch.nn.ReLU6)."""

    def forward(self, x):
        y = relu6(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self._saved()
        return relu6_backward(grad_y, y)


class LeakyReLU(_Elementwise):
    def __init__(self, negative_slope=0.01, dtype=np.float32):
        super().__init__(dtype)
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        y = leaky_relu(x, self.negative_slope)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y):
        (x,) = self._saved()
        return leaky_relu_backward(grad_y, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Elementwise):
    def forward(self, x):
        y = sigmoid(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self._saved()
        return sigmoid_backward(grad_y, y)


class Tanh(_Elementwise):
    def forward(self, x):
        y = tanh(x)
        self._save_for_backward(y)
        return y

    def backward(self, grad_y):
        (y,) = self._saved()
        return tanh_backward(grad_y, y)


class Softplus(_Elementwise):
    def __init__(self, beta=1.0, threshold=20.0, dtype=np.float32):
        super().__init__(dtype)
        self.beta = float(beta)
        self.threshold = float(threshold)

    def forward(self, x):
        y = softplus(x, self.beta, self.threshold)
        self._save_for_backward(x)
        return y

    def backward(self, grad_y):
        (x,) = self._saved()
        return softplus_backward(grad_y, x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"
