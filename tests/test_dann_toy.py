from __future__ import annotations

import numpy as np

from autopid.dann_toy import run_two_moons, two_moons


def test_two_moons_setup() -> None:
    xs, ys, xt, yt = two_moons()
    assert xs.shape == xt.shape == (150, 2)
    assert ys.mean() == 0.5 and yt.mean() == 0.5
    assert not np.allclose(xs.mean(0), xt.mean(0), atol=0.05) or not np.allclose(xs, xt)


def test_adaptation_helps_on_the_rotated_target() -> None:
    # several seeds: the claim is about the method, not one lucky initialisation
    gains = []
    for seed in range(3):
        plain = run_two_moons(0.0, seed=seed, steps=1500)
        adapted = run_two_moons(1.0, seed=seed, steps=1500)
        assert plain.source_accuracy > 0.85 and adapted.source_accuracy > 0.9
        gains.append(adapted.target_accuracy - plain.target_accuracy)
    assert np.mean(gains) > 0.1, gains
