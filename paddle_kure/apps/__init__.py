"""The application wing: studies and pipelines built on the library core.

``run`` (the ``paddle-kure run`` pipeline) and its YAML schema ``run_config``,
``robustness`` (step-size sweeps of a trained model, tables, plots),
``transformer_study`` and ``report`` (the kurtosis report of ``paddle-kure analyze``).
The core (``paddle_kure`` outside ``apps``) never imports this package.
"""
