"""CNNs built by hand with the structure of torchvision's mobilenet_v2, densenet121, googlenet and
vgg11_bn (torchvision is not needed: the layers, their order and the way tensors flow are what
matters to channel pruning), plus a ResNeXt-style block (grouped convs) and an MLP with LayerNorm.
`width` scales every channel count (1.0: torchvision's sizes) so tests can use small copies."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _div8(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of 8, never more than 10 % down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _c(v: int, width: float) -> int:
    return max(2, int(round(v * width)))


# ---- MobileNetV2: inverted residuals with depthwise convs -----------------------------------
class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, k=1))
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
               [6, 320, 1, 1]]

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        cin, last = _div8(32 * width), _div8(1280 * max(1.0, width))
        feats: List[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in self.SETTING:
            cout = _div8(c * width)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNReLU6(cin, last, k=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---- DenseNet: every layer's output concatenated to all before it ---------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * growth, growth, bn_size) for i in range(n)})

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """densenet121 with growth 32, blocks (6, 12, 24, 16), 64 initial features at width 1."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, blocks: Sequence[int] = (6, 12, 24, 16),
                 bn_size: int = 4) -> None:
        super().__init__()
        growth, c = _c(32, width), _c(64, width)
        feats: List[Tuple[str, nn.Module]] = [("conv0", nn.Conv2d(3, c, 7, 2, 3, bias=False)),
                                              ("norm0", nn.BatchNorm2d(c)), ("relu0", nn.ReLU(inplace=True)),
                                              ("pool0", nn.MaxPool2d(3, 2, 1))]
        for i, n in enumerate(blocks):
            feats.append((f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size)))
            c += n * growth
            if i != len(blocks) - 1:
                feats.append((f"transition{i + 1}", Transition(c, c // 2)))
                c //= 2
        feats.append(("norm5", nn.BatchNorm2d(c)))
        self.features = nn.Sequential()
        for name, m in feats:
            self.features.add_module(name, m)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# ---- GoogLeNet: inception branches concatenated ----------------------------------------------
class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin: int, ch1: int, ch3r: int, ch3: int, ch5r: int, ch5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3r, kernel_size=1),
                                     BasicConv2d(ch3r, ch3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5r, kernel_size=1),
                                     BasicConv2d(ch5r, ch5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    CFG = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
           "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
           "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
           "5b": (384, 192, 384, 48, 128, 128)}

    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        w = lambda v: _c(v, width)  # noqa: E731
        self.conv1 = BasicConv2d(3, w(64), kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(w(64), w(64), kernel_size=1)
        self.conv3 = BasicConv2d(w(64), w(192), kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        c = w(192)
        for name, cfg in self.CFG.items():
            cfg = tuple(w(v) for v in cfg)
            setattr(self, f"inception{name}", Inception(c, *cfg))
            c = cfg[0] + cfg[2] + cfg[4] + cfg[5]
        self.maxpool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4e(self.inception4d(self.inception4c(self.inception4b(self.inception4a(x)))))
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# ---- VGG with batch-norm, and its hidden Linear layers ---------------------------------------
class VGG(nn.Module):
    """vgg11_bn: 8 conv-BN-ReLU layers, 7x7 adaptive pooling, flatten, Linear-ReLU-Dropout twice, Linear."""

    CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

    def __init__(self, num_classes: int = 1000, width: float = 1.0, hidden: int = 4096, pool: int = 7) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        c = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, _c(v, width), 3, padding=1), nn.BatchNorm2d(_c(v, width)),
                           nn.ReLU(inplace=True)]
                c = _c(v, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(nn.Linear(c * pool * pool, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- grouped convs (ResNeXt-style) and LayerNorm ---------------------------------------------
class ResNeXtBlock(nn.Module):
    """1x1 reduce, 3x3 grouped conv (cardinality `groups`), 1x1 expand, residual add."""

    def __init__(self, c: int, mid: int, groups: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, c, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(x + self.bn3(self.conv3(y)))


class ResNeXtLike(nn.Module):
    def __init__(self, num_classes: int = 10, c: int = 16, mid: int = 16, groups: int = 4) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.block1, self.block2 = ResNeXtBlock(c, mid, groups), ResNeXtBlock(c, mid, groups)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(F.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class LayerNormMLP(nn.Module):
    def __init__(self, cin: int = 3 * 16 * 16, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1, self.ln1 = nn.Linear(cin, hidden), nn.LayerNorm(hidden)
        self.fc2, self.ln2 = nn.Linear(hidden, hidden), nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = F.gelu(self.ln1(self.fc1(torch.flatten(x, 1))))
        return self.head(F.gelu(self.ln2(self.fc2(x))))


# ---- ResNet-50: bottleneck blocks, torchvision's layout ---------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or cin != out else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50(nn.Module):
    """torchvision's resnet50 layout: 7x7 stem, bottleneck stages (3, 4, 6, 3), 25.6 M parameters at 1000 classes."""

    def __init__(self, num_classes: int = 1000, layers: Sequence[int] = (3, 4, 6, 3), width: float = 1.0) -> None:
        super().__init__()
        c = _c(64, width)
        self.conv1, self.bn1 = nn.Conv2d(3, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(layers):
            planes = _c(64 * 2 ** i, width)
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, planes, 2 if (j == 0 and i > 0) else 1))
                c = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
