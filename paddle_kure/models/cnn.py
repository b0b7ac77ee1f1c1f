"""The default model of ``paddle-kure run``: a small CNN for 28x28 grey images."""
from __future__ import annotations

import paddle
from paddle import nn

__all__ = ["SmallCNN"]


class SmallCNN(nn.Layer):
    """Two 3x3 conv + ReLU + 2x2 max-pool blocks, then two fully connected layers.

    Layer names (``conv1``, ``conv2``, ``fc1``, ``fc2``) are what config patterns
    such as ``Kurtosis.exclude: ["conv1.*"]`` match.

    Args:
        num_classes (int, optional): outputs. Default 10.
        channels (tuple[int, int], optional): output channels of the two convs. Default (16, 32).
        hidden (int, optional): width of ``fc1``. Default 128.
        in_channels (int, optional): image channels. Default 1.
        image_size (int, optional): image height and width (a multiple of 4). Default 28.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.models import SmallCNN
            >>> model = SmallCNN()
            >>> print(model(paddle.zeros([2, 1, 28, 28])).shape)
            [2, 10]
    """

    def __init__(self, num_classes=10, channels=(16, 32), hidden=128, in_channels=1, image_size=28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"SmallCNN: image_size must be a multiple of 4 (two 2x2 pools), got {image_size}")
        self.conv1 = nn.Conv2D(in_channels, channels[0], 3, padding=1)
        self.conv2 = nn.Conv2D(channels[0], channels[1], 3, padding=1)
        self.pool = nn.MaxPool2D(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(channels[1] * (image_size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(paddle.flatten(x, 1)))
        return self.fc2(x)
