"""Test helper: run a block in one of Paddle's static graph modes."""
import contextlib

import paddle


@contextlib.contextmanager
def static_mode(ir):
    """Static mode on a legacy Program ("legacy") or PIR ("pir"), dygraph after."""
    if ir not in ("legacy", "pir"):
        raise ValueError(f"static_mode: ir must be 'legacy' or 'pir', got {ir!r}")
    guard = paddle.pir_utils.OldIrGuard() if ir == "legacy" else paddle.pir_utils.IrGuard()
    with guard:
        paddle.enable_static()
        try:
            yield
        finally:
            paddle.disable_static()
