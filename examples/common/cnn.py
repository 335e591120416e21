"""Small CNNs the demos train: ResNet-style (residual blocks) and AlexNet-style (plain stack)."""
from __future__ import annotations

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut, relu. Separate ReLU modules, so each feature map has a name."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + idt)


class ResNetSmall(nn.Module):
    """A ResNet-style CNN: stem, three stages of `blocks` BasicBlocks (widths w, 2w, 4w), avgpool, linear."""

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: int = 2, in_ch: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        layers, cin = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            stage = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            cin = w
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class AlexNetSmall(nn.Module):
    """An AlexNet-style CNN: conv/relu/maxpool stack, flatten, dropout-linear-relu classifier."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_ch: int = 1, size: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, w, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 3 * w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(3 * w, 2 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        )
        s = size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * w * s * s, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS = {"resnet": ResNetSmall, "alexnet": AlexNetSmall}
