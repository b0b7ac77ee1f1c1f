"""The 8x8-input CNN the quantization tests share: one conv, one fc."""
import paddle


class TinyCNN(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(1, 4, 3)
        self.fc = paddle.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(paddle.flatten(paddle.nn.functional.relu(self.conv(x)), 1))
