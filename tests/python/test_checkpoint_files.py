"""taper's checkpoint files read by the Python tools people use on HF's:
the `safetensors` package and transformers' own `TrainerState`."""

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from transformers.trainer_callback import TrainerState

ROOT = Path(__file__).resolve().parents[2]
TAPER = os.environ.get("TAPER_BIN", str(ROOT / "target" / "debug" / "taper"))

MLP_SHAPES = {
    "layers.0.weight": (64, 11),
    "layers.0.bias": (64,),
    "layers.1.weight": (64, 64),
    "layers.1.bias": (64,),
    "layers.2.weight": (6, 64),
    "layers.2.bias": (6,),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    subprocess.run(
        [TAPER, "train", "--max_steps", "10", "--save_steps", "10", "--logging_steps", "5", "--output_dir", str(out), "--disable_tqdm"],
        check=True,
        capture_output=True,
    )
    return out


def test_weights_load_with_the_expected_names_and_shapes(run):
    for path in [run / "model.safetensors", run / "checkpoint-10" / "model.safetensors"]:
        tensors = load_file(path)
        assert {name: t.shape for name, t in tensors.items()} == MLP_SHAPES
        assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in tensors.values())
    # The final weights are the checkpoint's: the run ended at step 10.
    final, ckpt = load_file(run / "model.safetensors"), load_file(run / "checkpoint-10" / "model.safetensors")
    assert all(np.array_equal(final[k], ckpt[k]) for k in MLP_SHAPES)


def test_optimizer_state_holds_both_adam_moments_per_parameter(run):
    state = load_file(run / "checkpoint-10" / "optimizer.safetensors")
    expected = {f"{buf}.{name}": shape for name, shape in MLP_SHAPES.items() for buf in ["exp_avg", "exp_avg_sq"]}
    assert {k: v.shape for k, v in state.items()} == expected
    assert all((state[k] >= 0).all() for k in state if k.startswith("exp_avg_sq."))
    assert json.loads((run / "checkpoint-10" / "optimizer.json").read_text())["scalars"]["step"] == 10


def test_trainer_state_has_hf_keys_and_loads_in_transformers(run):
    path = run / "checkpoint-10" / "trainer_state.json"
    ours = json.loads(path.read_text())
    assert sorted(ours) == sorted(f.name for f in dataclasses.fields(TrainerState))
    state = TrainerState.load_from_json(str(path))
    assert state.global_step == 10 and state.max_steps == 10
    assert state.log_history[-1]["step"] == 10
    assert path.read_text() == json.dumps(ours, indent=2, sort_keys=True) + "\n"
