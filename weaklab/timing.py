"""The one timer of the cost metrics a method reports per epoch (``gmm_s``, ``ot_s``,
``label_update_s``, ...): wall seconds of the timed work, including its GPU kernels.
The engine's own epoch clock (``epoch_s``, ``train_s``, ``method_s``) and Ray's resource
meter (``weaklab.tune.trainable.CostMeter``) measure whole epochs and whole trials."""

from __future__ import annotations

import time

import torch


class Stopwatch:
    """Accumulates the time of ``with`` blocks: CUDA events on GPU (no sync in the hot loop),
    ``perf_counter`` on CPU. ``pop()`` returns the seconds so far and resets."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pairs: list = []
        self._s = 0.0

    def __enter__(self):
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pairs.append((self._start, end))
        else:
            self._s += time.perf_counter() - self._t

    def pop(self) -> float:
        s = self._s
        if self._pairs:
            torch.cuda.synchronize()
            s += sum(a.elapsed_time(b) for a, b in self._pairs) / 1000.0
        self._pairs, self._s = [], 0.0
        return s
