"""Test helper: run a block in one of Paddle's static graph modes."""
import contextlib

import paddle


@contextlib.contextmanager
def static_mode(ir):
    """Static mode on a legacy Program ("legacy") or PIR ("pir"), dygraph after."""
    guard = paddle.pir_utils.OldIrGuard() if ir == "legacy" else contextlib.nullcontext()
    with guard:
        paddle.enable_static()
        try:
            yield
        finally:
            paddle.disable_static()
