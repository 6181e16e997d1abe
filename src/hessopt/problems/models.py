"""Model factories for the neural-network problems, with deterministic initialisation from a seed.

Every factory takes a keyword ``seed`` and draws its initial weights inside
``torch.random.fork_rng`` after ``torch.manual_seed(seed)``: equal seeds give bit-identical parameters,
and the caller's global CPU RNG state is left untouched. Models are built in float32 on the CPU;
:func:`build_model` can cast them (``dtype=torch.float64`` for accuracy tests).

Feed-forward models are flat ``nn.Sequential`` stacks of standard layers (``Linear``, ``Conv2d``,
``MaxPool2d``, ``ZeroPad2d``, activations, ``Flatten``), so layer-wise curvature rules can walk them.

Names for :func:`build_model` (factory; expected input):

- ``"mlp"``: :func:`mlp`, a Linear/activation stack; ``(N, D)`` or images (flattened).
- ``"logreg"``: :func:`logistic_regression`; ``(N, D)`` or images.
- ``"cnn_2c2d"``: :func:`cnn_2c2d`, DeepOBS ``fmnist_2c2d``, 3,274,634 parameters; ``(N, C, 28, 28)``.
- ``"cnn_3c3d"``: :func:`cnn_3c3d`, DeepOBS ``cifar10_3c3d`` sized for 28 x 28, 892,010 parameters;
  ``(N, C, 28, 28)``.
- ``"autoencoder"``: :func:`autoencoder`, 784-1000-500-250-30 and mirror, 2,837,314 parameters;
  ``(N, 784)`` or images.
- ``"autoencoder_small"``: :func:`autoencoder` with widths 784-256-32, 419,120 parameters.
- ``"lstm"``: :func:`lstm_classifier`, a 3-layer LSTM over 4 x 4-pooled image rows, 22,474 parameters;
  ``(N, 784)`` or ``(N, 1, 28, 28)``.
- ``"resnet_small"``: :func:`resnet_small`, a ResNet-style CNN with three stages of one residual block,
  widths 8-16-32, 19,810 parameters; ``(N, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "PooledLSTMClassifier",
    "ResidualBlock",
    "SmallResNet",
    "autoencoder",
    "build_model",
    "cnn_2c2d",
    "cnn_3c3d",
    "logistic_regression",
    "lstm_classifier",
    "mlp",
    "resnet_small",
    "sparse_init_",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}
INITS = ("default", "sparse")


# ------------------------------------------------------------------------------------------- helpers


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _widths(widths, name: str, minimum: int = 0) -> tuple[int, ...]:
    if isinstance(widths, (int, str)) or not isinstance(widths, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints such as (256, 128), got {widths!r}")
    out = tuple(_positive_int(w, f"every entry of {name}") for w in widths)
    if len(out) < minimum:
        raise ValueError(f"{name} needs at least {minimum} entries, got {widths!r}")
    return out


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def sparse_init_(layer: nn.Linear, nonzeros: int = 15, bias: float = 0.0) -> nn.Linear:
    """Martens' sparse initialisation (J. Martens, "Deep learning via Hessian-free optimization", ICML 2010).

    Sec. 5 of the paper: each output unit gets ``min(nonzeros, in_features)`` non-zero incoming weights drawn
    from N(0, 1) at random positions; all other weights are 0 and the bias is ``bias`` (Martens: 15 non-zeros,
    bias 0, or 0.5 for tanh units). Uses the global torch RNG (call it inside a seeded context). Cost O(out *
    in).
    """
    with torch.no_grad():
        k = min(nonzeros, layer.in_features)
        cols = torch.rand(layer.out_features, layer.in_features).argsort(dim=1)[:, :k]
        weight = torch.zeros_like(layer.weight)
        weight.scatter_(1, cols, torch.randn(layer.out_features, k, dtype=weight.dtype))
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.fill_(bias)
    return layer


def _dense_stack(
    sizes: Sequence[int],
    activation: str,
    *,
    init: str,
    hidden_activations: Sequence[bool],
) -> list[nn.Module]:
    """Linear layers ``sizes[i] -> sizes[i+1]``, each followed by the activation where flagged."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    act = _activation(activation)
    layers: list[nn.Module] = []
    for fan_in, fan_out, activated in zip(sizes[:-1], sizes[1:], hidden_activations, strict=True):
        linear = nn.Linear(fan_in, fan_out)
        if init == "sparse":
            sparse_init_(linear, bias=0.5 if activated and activation == "tanh" else 0.0)
        layers.append(linear)
        if activated:
            layers.append(act())
    return layers


def _same_pool(size: int, kernel: int, stride: int) -> tuple[list[nn.Module], int]:
    """TensorFlow-style ``padding='same'`` max pooling.

    TensorFlow ``padding='same'`` max pooling: output ``ceil(size/stride)``, the padding split with the
    extra pixel after. Zero padding equals TF's -inf padding here because every pool follows a ReLU
    (inputs >= 0) and each window keeps at least one real pixel.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    pad: list[nn.Module] = [nn.ZeroPad2d((before, after, before, after))] if total else []
    return [*pad, nn.MaxPool2d(kernel, stride)], out


# --------------------------------------------------------------------------------------------- models


def mlp(
    in_features: int,
    widths: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    *,
    init: str = "default",
    seed: int = 0,
) -> nn.Sequential:
    """Multi-layer perceptron ``in_features -> widths... -> out_features`` (logits, no final activation).

    Starts with ``nn.Flatten`` so image batches work too. ``activation`` in :data:`ACTIVATIONS`.
    ``init="default"`` keeps PyTorch's ``nn.Linear`` init (weights and biases U(-1/sqrt(fan_in),
    1/sqrt(fan_in))); ``"sparse"`` applies :func:`sparse_init_` to every layer. Parameters:
    ``sum (fan_in + 1) * fan_out`` over consecutive sizes.
    """
    sizes = (_positive_int(in_features, "in_features"), *_widths(widths, "widths"))
    sizes += (_positive_int(out_features, "out_features"),)
    flags = [True] * (len(sizes) - 2) + [False]
    with _seeded(seed):
        return nn.Sequential(
            nn.Flatten(), *_dense_stack(sizes, activation, init=init, hidden_activations=flags)
        )


def logistic_regression(
    in_features: int, num_classes: int, *, init: str = "zeros", seed: int = 0
) -> nn.Sequential:
    """Multinomial logistic regression: ``Flatten`` then one ``Linear(in_features, num_classes)`` (logits).

    ``init="zeros"`` (default) starts from all-zero weights and biases as DeepOBS ``mnist_logreg`` does
    (the problem is convex, so the start needs no symmetry breaking and ``seed`` has no effect);
    ``init="default"`` uses PyTorch's seeded ``nn.Linear`` init.
    Parameters: ``(in_features + 1) * num_classes``.
    """
    if init not in ("zeros", "default"):
        raise ValueError(f"init must be 'zeros' or 'default', got {init!r}")
    with _seeded(seed):
        linear = nn.Linear(
            _positive_int(in_features, "in_features"), _positive_int(num_classes, "num_classes")
        )
        if init == "zeros":
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.Flatten(), linear)


def cnn_2c2d(
    num_classes: int = 10, in_channels: int = 1, *, input_size: int = 28, seed: int = 0
) -> nn.Sequential:
    """DeepOBS ``fmnist_2c2d`` / ``mnist_2c2d`` (Schneider, Balles & Hennig 2019, ICLR, App. A).

    conv 5x5 32 'same' + ReLU + maxpool 2/2 'same', conv 5x5 64 'same' + ReLU + maxpool 2/2 'same',
    dense 1024 + ReLU, dense ``num_classes`` (logits). Init as DeepOBS: every weight from a normal with
    std 0.05 truncated at two standard deviations, every bias 0.05. For 28 x 28 inputs the flattened size
    is 7*7*64 and the model has 3,274,634 parameters at 10 classes. Input ``(N, in_channels, s, s)`` with
    ``s = input_size``. Forward cost: about 13.9 million multiply-adds per 28 x 28 image.
    """
    c = _positive_int(in_channels, "in_channels")
    size = _positive_int(input_size, "input_size")
    pool1, size = _same_pool(size, 2, 2)
    pool2, size = _same_pool(size, 2, 2)
    with _seeded(seed):
        model = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2),
            nn.ReLU(),
            *pool1,
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            *pool2,
            nn.Flatten(),
            nn.Linear(size * size * 64, 1024),
            nn.ReLU(),
            nn.Linear(1024, _positive_int(num_classes, "num_classes")),
        )
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.05, a=-0.1, b=0.1)
                nn.init.constant_(module.bias, 0.05)
    return model


def cnn_3c3d(
    num_classes: int = 10, in_channels: int = 1, *, input_size: int = 28, seed: int = 0
) -> nn.Sequential:
    """DeepOBS ``cifar10_3c3d`` (Schneider, Balles & Hennig 2019, ICLR, App. A), sized for 28 x 28 inputs.

    conv 5x5 64 'valid' + ReLU + maxpool 3/2 'same'; conv 3x3 96 'valid' + ReLU + maxpool 3/2 'same';
    conv 3x3 128 'same' + ReLU + maxpool 3/2 'same'; dense 512 + ReLU, dense 256 + ReLU, dense
    ``num_classes`` (logits). Init as DeepOBS: conv weights Xavier-normal, dense weights Xavier-uniform,
    biases 0.

    Adaptation from 32 x 32 x 3 CIFAR-10: the spatial sizes run 28 -> 24 -> 12 -> 10 -> 5 -> 5 -> 3
    instead of 32 -> 28 -> 14 -> 12 -> 6 -> 6 -> 3, so the flattened size is the original 3*3*128 and
    all layers but the first keep DeepOBS's shapes; only ``in_channels`` (1 for grey images) changes the
    first convolution. 892,010 parameters for 28 x 28 x 1 and 10 classes (895,210 for the CIFAR original,
    ``in_channels=3, input_size=32``). DeepOBS's L2 penalty (0.002) belongs to the loss, not to this model.
    """
    c = _positive_int(in_channels, "in_channels")
    if _positive_int(input_size, "input_size") < 9:
        raise ValueError(f"input_size must be at least 9 for cnn_3c3d's valid convolutions, got {input_size}")
    pool1, size = _same_pool(input_size - 4, 3, 2)  # after the 5x5 valid convolution
    pool2, size = _same_pool(size - 2, 3, 2)  # after the 3x3 valid convolution
    pool3, size = _same_pool(size, 3, 2)
    with _seeded(seed):
        model = nn.Sequential(
            nn.Conv2d(c, 64, 5),
            nn.ReLU(),
            *pool1,
            nn.Conv2d(64, 96, 3),
            nn.ReLU(),
            *pool2,
            nn.Conv2d(96, 128, 3, padding=1),
            nn.ReLU(),
            *pool3,
            nn.Flatten(),
            nn.Linear(size * size * 128, 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, _positive_int(num_classes, "num_classes")),
        )
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def autoencoder(
    widths: Sequence[int] = (784, 1000, 500, 250, 30),
    *,
    activation: str = "sigmoid",
    init: str = "default",
    seed: int = 0,
) -> nn.Sequential:
    """Deep autoencoder of Hinton & Salakhutdinov (2006, Science 313:504), the HF benchmark of Martens (2010).

    Encoder ``widths[0] -> ... -> widths[-1]``, decoder the mirror image back to ``widths[0]``. As in the
    paper, hidden units are logistic (``activation="sigmoid"``), the code layer (``widths[-1]`` units) is
    linear, and the output layer is logistic: this model returns its *pre-sigmoid logits*, to be trained
    with ``nn.BCEWithLogitsLoss`` against inputs in [0, 1] (the paper's cross-entropy error, numerically
    stable); for the squared-error variant apply ``torch.sigmoid`` to the output first. The input is
    flattened, so compare the output with ``x.flatten(1)``. ``init="default"`` is PyTorch's ``nn.Linear``
    init (the paper pretrained with RBMs; Martens used ``"sparse"``, see :func:`sparse_init_`).
    Parameters: 2,837,314 for the default widths.
    """
    sizes = _widths(widths, "widths", minimum=2)
    full = sizes + sizes[-2::-1]
    code = len(sizes) - 2  # index of the Linear layer that produces the code
    flags = [i != code and i != len(full) - 2 for i in range(len(full) - 1)]
    with _seeded(seed):
        return nn.Sequential(
            nn.Flatten(), *_dense_stack(full, activation, init=init, hidden_activations=flags)
        )


class PooledLSTMClassifier(nn.Module):
    """LSTM classifier over an average-pooled image read row by row (see :func:`lstm_classifier`)."""

    def __init__(self, num_classes: int, hidden_size: int, num_layers: int, image_size: int, pool: int):
        super().__init__()
        self.image_size, self.pool = image_size, pool
        steps = image_size // pool
        self.lstm = nn.LSTM(steps, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the last time step's top hidden state."""
        images = x.reshape(x.shape[0], 1, self.image_size, self.image_size)
        rows = F.avg_pool2d(images, self.pool).squeeze(1)  # (N, steps, steps): time = pooled image rows
        out, _ = self.lstm(rows)
        return self.head(out[:, -1])


def lstm_classifier(
    num_classes: int = 10,
    hidden_size: int = 32,
    num_layers: int = 3,
    *,
    image_size: int = 28,
    pool: int = 4,
    seed: int = 0,
) -> PooledLSTMClassifier:
    """Stacked LSTM over a ``pool`` x ``pool`` average-pooled grey image, one pooled row per time step.

    With the defaults a 28 x 28 image becomes 7 steps of 7 features, fed to a 3-layer ``nn.LSTM`` with
    ``hidden_size`` units; a linear head maps the top layer's last hidden state to logits. A small
    recurrent problem that runs on a CPU (the pooling keeps the sequence short). Input ``(N, 784)`` or
    ``(N, 1, 28, 28)``. Init: PyTorch's LSTM/Linear defaults (U(-1/sqrt(hidden), 1/sqrt(hidden))).
    Parameters: ``4h(f + h + 2) + (L - 1) 4h(2h + 2) + (h + 1) c`` with f = image_size // pool.
    """
    size = _positive_int(image_size, "image_size")
    p = _positive_int(pool, "pool")
    if size % p:
        raise ValueError(f"pool must divide image_size, got pool={p}, image_size={size}")
    with _seeded(seed):
        return PooledLSTMClassifier(
            _positive_int(num_classes, "num_classes"),
            _positive_int(hidden_size, "hidden_size"),
            _positive_int(num_layers, "num_layers"),
            size,
            p,
        )


class ResidualBlock(nn.Module):
    """He et al. (2016, CVPR) basic block: conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU.

    The shortcut is the identity, or a strided 1x1 convolution with BatchNorm when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        """Two 3x3 convolutions (the first with ``stride``) and the shortcut."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv3x3-BN-ReLU, one :class:`ResidualBlock` per stage, global average pooling, linear head."""

    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...]):
        """Stem, one residual block per entry of ``widths``, head (see :func:`resnet_small`)."""
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, previous = [], widths[0]
        for i, width in enumerate(widths):
            stages.append(ResidualBlock(previous, width, stride=1 if i == 0 else 2))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of images ``(N, in_channels, H, W)``."""
        return self.head(self.stages(self.stem(x)))


def resnet_small(
    num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (8, 16, 32), *, seed: int = 0
) -> SmallResNet:
    """A small ResNet-style CNN (He, Zhang, Ren, Sun 2016, CVPR "Deep residual learning", Sec. 4.2 layout).

    Three stages of one basic residual block each, with ``widths`` channels (the first stage keeps the
    resolution, the others halve it), a 3x3 stem, global average pooling and a linear head returning
    logits; BatchNorm after every convolution, no convolution biases. A CPU-sized stand-in for the
    ResNet of Zhang et al. (2017, arXiv:1712.07296) on CIFAR-10. Init: PyTorch's defaults
    (Kaiming-uniform convolutions, BatchNorm weight 1 and bias 0). Input ``(N, in_channels, H, W)``, any
    ``H, W >= 4``. Parameters: 19,810 for the defaults (10 classes, 1 channel).
    """
    sizes = _widths(widths, "widths", minimum=1)
    with _seeded(seed):
        return SmallResNet(
            _positive_int(num_classes, "num_classes"), _positive_int(in_channels, "in_channels"), sizes
        )


def _autoencoder_small(**kwargs) -> nn.Sequential:
    return autoencoder(widths=(784, 256, 32), **kwargs)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "logreg": logistic_regression,
    "cnn_2c2d": cnn_2c2d,
    "cnn_3c3d": cnn_3c3d,
    "autoencoder": autoencoder,
    "autoencoder_small": _autoencoder_small,
    "lstm": lstm_classifier,
    "resnet_small": resnet_small,
}
MODELS: tuple[str, ...] = tuple(_FACTORIES)


def build_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32, **kwargs) -> nn.Module:
    """Build a model of the zoo.

    Build model ``name`` (one of :data:`MODELS`) with ``seed``, cast to ``dtype``; ``kwargs`` go to the
    factory (e.g. ``build_model("mlp", in_features=64, widths=(32,), out_features=10)``).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(MODELS)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return _FACTORIES[name](seed=seed, **kwargs).to(dtype)
