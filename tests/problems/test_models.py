"""Model factories (hessopt.problems.models): shapes, parameter counts, seeded init, DeepOBS details."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from hessopt.problems import models


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dense(fan_in: int, fan_out: int) -> int:
    return (fan_in + 1) * fan_out


# name -> (factory kwargs, input batch shape, output shape per sample); small variants keep tests fast
CASES = {
    "mlp": (dict(in_features=64, widths=(32, 16), out_features=10), (3, 64), (10,)),
    "logreg": (dict(in_features=784, num_classes=10, init="default"), (3, 1, 28, 28), (10,)),
    "cnn_2c2d": ({}, (2, 1, 28, 28), (10,)),
    "cnn_3c3d": ({}, (2, 1, 28, 28), (10,)),
    "autoencoder": (dict(widths=(64, 16, 4)), (3, 64), (64,)),
    "autoencoder_small": ({}, (2, 1, 28, 28), (784,)),
    "lstm": ({}, (3, 784), (10,)),
    "resnet_small": ({}, (2, 1, 28, 28), (10,)),
}


def test_cases_cover_every_model():
    assert set(CASES) == set(models.MODELS)


@pytest.mark.parametrize("name", models.MODELS)
def test_forward_backward(name):
    kwargs, in_shape, out_shape = CASES[name]
    model = models.build_model(name, seed=0, **kwargs)
    x = torch.rand(in_shape, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (in_shape[0], *out_shape) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", models.MODELS)
def test_seeded_init_and_global_rng_untouched(name):
    kwargs = dict(CASES[name][0])
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = models.build_model(name, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    b = models.build_model(name, seed=7, **kwargs)
    c = models.build_model(name, seed=8, **kwargs)
    pa, pb, pc = (list(m.parameters()) for m in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(pa, pc, strict=True))
    assert torch.equal(torch.get_rng_state(), state)


def test_parameter_counts_by_hand():
    assert count(models.mlp(784, (256,), 10)) == 784 * 256 + 256 + 256 * 10 + 10 == 203_530
    assert count(models.mlp(64, (32, 16), 10)) == dense(64, 32) + dense(32, 16) + dense(16, 10) == 2_778
    assert count(models.logistic_regression(784, 10)) == 7_850
    conv = lambda c_in, c_out, k: c_out * c_in * k * k + c_out  # noqa: E731
    # DeepOBS 2c2d: conv5x5 1->32, conv5x5 32->64, dense 7*7*64 -> 1024 -> 10
    two = conv(1, 32, 5) + conv(32, 64, 5) + dense(7 * 7 * 64, 1024) + dense(1024, 10)
    assert count(models.cnn_2c2d()) == two == 3_274_634
    # DeepOBS 3c3d: conv5x5 c->64, conv3x3 64->96, conv3x3 96->128, dense 3*3*128 -> 512 -> 256 -> 10
    three = (
        conv(1, 64, 5)
        + conv(64, 96, 3)
        + conv(96, 128, 3)
        + dense(1152, 512)
        + dense(512, 256)
        + dense(256, 10)
    )
    assert count(models.cnn_3c3d()) == three == 892_010
    assert count(models.cnn_3c3d(in_channels=3, input_size=32)) == three + 2 * 64 * 25 == 895_210
    widths = (784, 1000, 500, 250, 30)
    encoder = sum(dense(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
    decoder = sum(dense(b, a) for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert count(models.autoencoder()) == encoder + decoder == 2_837_314
    h, f, c = 32, 7, 10  # nn.LSTM layer: 4h(in + h) weights + 2 * 4h biases
    lstm = 4 * h * (f + h) + 8 * h + 2 * (4 * h * (2 * h) + 8 * h) + dense(h, c)
    assert count(models.lstm_classifier()) == lstm == 22_474
    k3 = lambda c_in, c_out: 9 * c_in * c_out  # noqa: E731  (bias-free 3x3 convolutions)
    bn = lambda c: 2 * c  # noqa: E731
    stage0 = 2 * (k3(8, 8) + bn(8))
    stage1 = k3(8, 16) + k3(16, 16) + 2 * bn(16) + 8 * 16 + bn(16)  # + 1x1 shortcut with BatchNorm
    stage2 = k3(16, 32) + k3(32, 32) + 2 * bn(32) + 16 * 32 + bn(32)
    resnet = k3(1, 8) + bn(8) + stage0 + stage1 + stage2 + dense(32, 10)
    assert count(models.resnet_small()) == resnet == 19_810


def test_resnet_small_shapes_and_shortcuts():
    model = models.resnet_small(num_classes=4, in_channels=3, widths=(4, 6, 8))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (2, 4)
    assert model.stem(x).shape == (2, 4, 32, 32)
    first, second, third = model.stages
    assert isinstance(first.shortcut, nn.Identity)  # same shape: identity shortcut
    assert second(first(model.stem(x))).shape == (2, 6, 16, 16)
    assert isinstance(second.shortcut[0], nn.Conv2d) and second.shortcut[0].stride == (2, 2)
    assert third.conv1.bias is None


def test_3c3d_on_cifar_shapes():
    model = models.cnn_3c3d(num_classes=100, in_channels=3, input_size=32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads", "out"),
    [(24, 3, 2, (0, 1), 12), (10, 3, 2, (0, 1), 5), (5, 3, 2, (1, 1), 3), (28, 2, 2, None, 14)],
)
def test_same_pool_matches_tf_padding_with_minus_inf(size, kernel, stride, pads, out):
    layers, got_out = models._same_pool(size, kernel, stride)
    assert got_out == out == math.ceil(size / stride)
    pool = nn.Sequential(*layers)
    if pads is None:
        assert len(layers) == 1
    else:
        assert layers[0].padding == (pads[0], pads[1], pads[0], pads[1])
    x = torch.relu(torch.randn(2, 3, size, size, dtype=torch.float64))  # pools follow ReLU in the models
    before, after = (0, 0) if pads is None else pads
    ref = F.max_pool2d(F.pad(x, (before, after, before, after), value=-math.inf), kernel, stride)
    torch.testing.assert_close(pool(x), ref, rtol=0, atol=0)
    assert ref.shape[-2:] == (out, out)


def test_2c2d_deepobs_init():
    model = models.cnn_2c2d(seed=3)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 4
    std = 0.05 * scipy.stats.truncnorm(-2, 2).std()  # truncated at two standard deviations
    for layer in layers:
        assert torch.all(layer.bias == 0.05)
        assert float(layer.weight.detach().abs().max()) <= 0.1
    big = layers[2].weight.detach().double()  # 3.2 M draws
    assert abs(float(big.mean())) < 1e-4 and float(big.std()) == pytest.approx(std, rel=2e-3)


def test_3c3d_deepobs_init():
    model = models.cnn_3c3d(seed=3)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.all(m.bias == 0)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    bound = math.sqrt(6 / (1152 + 512))  # Xavier-uniform
    assert float(fc.weight.detach().abs().max()) <= bound * (1 + 1e-6)  # float32 rounding
    assert float(fc.weight.detach().double().std()) == pytest.approx(bound / math.sqrt(3), rel=1e-2)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][2]
    fan_in, fan_out = 96 * 9, 128 * 9  # Xavier-normal
    assert float(conv.weight.detach().double().std()) == pytest.approx(
        math.sqrt(2 / (fan_in + fan_out)), rel=2e-2
    )


def test_autoencoder_structure_and_loss():
    model = models.autoencoder()
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten"] + ["Linear", "Sigmoid"] * 3 + ["Linear"] + ["Linear", "Sigmoid"] * 3 + [
        "Linear"
    ]
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert widths == [
        (784, 1000),
        (1000, 500),
        (500, 250),
        (250, 30),
        (30, 250),
        (250, 500),
        (500, 1000),
        (1000, 784),
    ]
    x = torch.rand(4, 1, 28, 28)
    loss = nn.BCEWithLogitsLoss()(model(x), x.flatten(1))
    assert torch.isfinite(loss) and loss > 0


def test_mlp_forward_matches_manual_formula():
    model = models.build_model(
        "mlp", seed=2, dtype=torch.float64, in_features=5, widths=(4,), out_features=3, activation="elu"
    )
    (l1, l2) = [m for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(6, 5, dtype=torch.float64)
    ref = F.elu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(model(x), ref, rtol=1e-14, atol=1e-14)
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_mlp_activations(activation):
    model = models.mlp(3, (4, 4), 2, activation)
    assert sum(isinstance(m, models.ACTIVATIONS[activation]) for m in model) == 2


def test_sparse_init():
    model = models.mlp(784, (100, 8), 10, "tanh", init="sparse", seed=1)
    l1, l2, l3 = [m for m in model if isinstance(m, nn.Linear)]
    assert torch.all((l1.weight != 0).sum(1) == 15) and torch.all((l2.weight != 0).sum(1) == 15)
    assert torch.all((l3.weight != 0).sum(1) == 8)  # fan-in below 15: all connections
    assert (
        torch.all(l1.bias == 0.5) and torch.all(l2.bias == 0.5) and torch.all(l3.bias == 0)
    )  # Martens: tanh
    nonzero = l1.weight.detach()[l1.weight != 0].double()
    assert float(nonzero.std()) == pytest.approx(1.0, abs=0.06)  # 1,500 draws from N(0, 1)
    sig = models.autoencoder((64, 16, 4), init="sparse")
    assert all(torch.all(m.bias == 0) for m in sig if isinstance(m, nn.Linear))


def test_lstm_reads_pooled_rows():
    model = models.lstm_classifier(seed=0).double()
    x = torch.rand(3, 784, dtype=torch.float64)
    rows = x.reshape(3, 7, 4, 7, 4).mean(dim=(2, 4))  # 4x4 average pooling by hand
    out, _ = model.lstm(rows)
    ref = model.head(out[:, -1])
    torch.testing.assert_close(model(x), ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(model(x.reshape(3, 1, 28, 28)), ref, rtol=1e-13, atol=1e-13)
    assert model.lstm.num_layers == 3 and model.lstm.input_size == 7


def test_logreg_zero_init():
    model = models.logistic_regression(64, 10, seed=5)
    assert all(torch.all(p == 0) for p in model.parameters())
    out = model(torch.rand(2, 64))
    torch.testing.assert_close(out, torch.zeros(2, 10), rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model name 'resnet'; choose one of mlp"):
        models.build_model("resnet")
    with pytest.raises(ValueError, match="activation must be one of"):
        models.mlp(3, (4,), 2, "gelu")
    with pytest.raises(TypeError, match="widths must be a sequence"):
        models.mlp(3, 4, 2)
    with pytest.raises(ValueError, match="every entry of widths must be a positive int"):
        models.mlp(3, (4, 0), 2)
    with pytest.raises(ValueError, match="init must be one of"):
        models.mlp(3, (4,), 2, init="xavier")
    with pytest.raises(TypeError, match="seed must be an int"):
        models.mlp(3, (4,), 2, seed=1.5)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        models.build_model("mlp", dtype=torch.int32, in_features=3, widths=(4,), out_features=2)
    with pytest.raises(ValueError, match="pool must divide image_size"):
        models.lstm_classifier(pool=5)
    with pytest.raises(ValueError, match="input_size must be at least 9"):
        models.cnn_3c3d(input_size=8)
    with pytest.raises(ValueError, match="widths needs at least 2 entries"):
        models.autoencoder((784,))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        models.logistic_regression(0, 10)
