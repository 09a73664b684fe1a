"""The random numbers a Kaldi binary draws on Linux, so that mixing-up perturbs as Kaldi does.

Kaldi's ``Rand()`` is the C library's ``rand()``; a fresh ``gmm-est`` / ``gmm-mixup`` process never
seeds it, so its draws start from glibc's default seed 1. ``DiagGmm::Split`` moves each new
Gaussian's mean by ``RandGauss()`` draws, Box-Muller from two ``RandUniform()`` draws. With the
same draws the project's mixing-up gives Kaldi's Gaussians, and the training its objective
(otherwise two runs are as far apart as two seeds: ~0.01 per frame, and a different local optimum).

:class:`GlibcRandom` is glibc's ``random_r`` additive-feedback generator (``TYPE_3``: degree 31,
separation 3, state seeded by the 16807 LCG, 310 draws discarded), which ``rand()`` calls.

>>> r = GlibcRandom(1)
>>> [r.rand() for _ in range(3)]
[1804289383, 846930886, 1681692777]
"""

from __future__ import annotations

import numpy as np

RAND_MAX = 2**31 - 1


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class GlibcRandom:
    """glibc's ``srand(seed)`` / ``rand()`` (see the module docstring)."""

    def __init__(self, seed: int = 1):
        seed &= 0xFFFFFFFF
        word = seed - 2**32 if seed >= 2**31 else seed
        if word == 0:
            word = 1  # glibc: "we must make sure the seed is not 0"
        state = [word]
        for _ in range(30):
            hi = _c_div(word, 127773)
            word = 16807 * (word - hi * 127773) - 2836 * hi  # 16807 * word mod 2^31-1, without overflow
            if word < 0:
                word += RAND_MAX
            state.append(word)
        self._state = [s & 0xFFFFFFFF for s in state]
        self._state += self._state[:3]
        for _ in range(310):
            self._step()

    def _step(self) -> int:
        state = self._state
        value = (state[-31] + state[-3]) & 0xFFFFFFFF
        state.append(value)
        if len(state) > 128:
            del state[:-31]
        return value >> 1

    def rand(self) -> int:
        return self._step()

    def rand_uniform(self) -> np.float32:
        """Kaldi's ``RandUniform()``: strictly between 0 and 1, as a float."""
        return np.float32((self.rand() + 1.0) / (RAND_MAX + 2.0))

    def rand_gauss(self) -> np.float32:
        """Kaldi's ``RandGauss()``: ``sqrtf(-2 logf(u1)) * cosf(2 pi u2)``, ``u1`` drawn first (as
        GCC evaluates the product; checked against Kaldi's mixed-up models' objective)."""
        u1 = self.rand_uniform()
        u2 = self.rand_uniform()
        radius = np.sqrt(np.float32(-2.0) * np.log(u1), dtype=np.float32)
        return np.float32(radius * np.cos(np.float32(2.0 * np.pi * float(u2)), dtype=np.float32))
