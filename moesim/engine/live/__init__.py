"""Pieces of the LiveExecutor (``moesim.engine.live_executor``): the device backend, the model's
kernels at its real shapes, and the copy engine thread. The harness that turns a prepared scenario
into a live RunResult is ``moesim.experiments.live`` (the run pipeline's live entry point).

Everything here imports torch, so nothing in ``moesim`` imports this package at module level:
only ``moesim harness | profile | calibrate`` (and the tests) reach it.
"""
