"""Compiled training steps (``jit_compile``, ``--jit-compile``): ``true`` compiles the step (``torch.compile`` on
torch, XLA on JAX and TensorFlow) and trains like the eager step; where torch cannot compile, one line on stderr
and an eager step; a bad value is refused."""

import keras
import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.ops.runtime import compile_error
from kmedssl.recipes.registry import make_recipe
from kmedssl.training import loop

TINY = dict(epochs=1, steps_per_epoch=3, batch_size=8, image_size=32, patch_size=8, data_size=40, health_every=0)


def test_a_compiled_step_trains_like_the_eager_step(tmp_path):
    # The supervised baseline draws no random numbers in its step (XLA's random bits differ from TensorFlow's
    # graph mode), so the two runs see the same computation.
    eager = recipes.pretrain("supervised", output_dir=tmp_path / "eager", verbose=0, jit_compile="false", seed=0,
                             **TINY)
    compiled = recipes.pretrain("supervised", output_dir=tmp_path / "compiled", verbose=0, jit_compile="true",
                                seed=0, **TINY)
    assert eager.model.jit_compile is False
    assert compiled.model.jit_compile is (compile_error() is None)
    np.testing.assert_allclose(compiled.history["loss"], eager.history["loss"], rtol=2e-3)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the fallback is torch's: XLA ships with jax/tf")
def test_where_torch_cannot_compile_the_step_is_eager_after_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "compile_error", lambda: "torch.compile cannot compile here (CppCompileError: no cc)")
    result = recipes.pretrain("spcl", output_dir=tmp_path / "run", verbose=0, jit_compile="true", **TINY)
    assert result.model.jit_compile is False
    notice = ("kmedssl: torch.compile cannot compile here (CppCompileError: no cc); training without compilation "
              "(jit_compile=false).")
    assert capsys.readouterr().err.splitlines().count(notice) == 1


@pytest.mark.backend_free
def test_an_unknown_jit_compile_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^Expected jit_compile in \('auto', 'true', 'false'\). Received: "
                                         r"jit_compile='yes'$"):
        make_recipe("spcl", "phantom", jit_compile="yes")
