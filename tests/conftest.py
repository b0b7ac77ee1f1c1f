
import numpy as np
import paddle
import pytest



@pytest.fixture(autouse=True)
def _dygraph_and_seed():
    """Every test starts in dygraph mode with fixed seeds, and is returned to it."""
    paddle.disable_static()
    paddle.seed(2024)
    np.random.seed(2024)
    yield
    paddle.disable_static()
