"""Part 6: many gated prompts in a row: no thread or memory growth, no preview left behind."""

from __future__ import annotations

import pytest

from . import soak


@pytest.mark.comfy
def test_soak_light(rel_comfy):
    soak.run(rel_comfy, prompts=30, warmup=10).assert_passed()


@pytest.mark.comfy
@pytest.mark.heavy
def test_soak_500_prompts(rel_comfy):
    soak.run(rel_comfy, prompts=500, warmup=50).assert_passed()
