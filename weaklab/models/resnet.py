"""CIFAR ResNet-18 (He et al. 2016 with a 3x3 stride-1 stem and no stem max-pool), and
torchvision's ImageNet ResNet-50 (untrained weights: nothing is downloaded) for the VOC preset."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from weaklab.models import register_arch


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


@register_arch("resnet18")
class CifarResNet18(nn.Module):
    def __init__(self, *, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        w = [max(4, int(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        layers, c = [], w[0]
        for i, c_out in enumerate(w):
            for j in range(2):
                layers.append(BasicBlock(c, c_out, 2 if (j == 0 and i > 0) else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.out_features = c

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


@register_arch("resnet50")
class ResNet50(nn.Module):
    """torchvision ResNet-50 body, randomly initialised (BalanceMix's VOC preset; GPU only in practice)."""

    def __init__(self, *, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        if in_shape[0] != 3:
            net.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
        net.fc = nn.Identity()
        self.net, self.out_features = net, 2048

    def forward(self, x):
        return self.net(x)
