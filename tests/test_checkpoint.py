"""Run folders: file discovery, every supported Orbax layout, shape checks, atomic saves."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from txtgen_nb import load_model_and_tokenizer
from txtgen_nb.checkpoint import find_run_files, load_run, restore_params, save_checkpoint, save_run

from conftest import tiny_config


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
            digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


def pure_params(params, dtype=None):
    pure = nnx.to_pure_dict(params)
    return pure if dtype is None else jax.tree_util.tree_map(lambda x: np.asarray(x).astype(dtype), pure)


def same_params(a, b) -> bool:
    return all(np.allclose(np.asarray(x), np.asarray(y), atol=1e-2) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "output"
    shutil.copytree(tiny_run, run)
    return run


@pytest.mark.parametrize("layout", ["nnx_state", "pure_dict", "params_key", "train_state", "bfloat16", "float16"])
def test_layouts_restore(tiny_run, tiny_model, tmp_path, layout):
    model, params, config = tiny_model
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "best_checkpoint")
    trees = {
        "nnx_state": params,
        "pure_dict": pure_params(params),
        "params_key": {"params": pure_params(params)},
        "train_state": {"step": 7, "params": pure_params(params),
                        "opt_state": {"mu": pure_params(params), "count": np.int32(7)}},
        "bfloat16": {"params": pure_params(params, jnp.bfloat16)},
        "float16": pure_params(params, np.float16),
    }
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((run / "best_checkpoint").absolute(), trees[layout])
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, params)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(restored))


def test_checkpoint_manager_takes_newest_step(tiny_run, tiny_model, tmp_path):
    _, params, _ = tiny_model
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "best_checkpoint")
    zeros = jax.tree_util.tree_map(np.zeros_like, pure_params(params))
    with ocp.CheckpointManager((run / "best_checkpoint").absolute()) as manager:
        manager.save(100, args=ocp.args.StandardSave({"params": zeros, "step": 100}))
        manager.save(200, args=ocp.args.StandardSave({"params": pure_params(params), "step": 200}))
        manager.wait_until_finished()
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, params)


def test_loading_never_writes(tiny_run):
    before = tree_digest(tiny_run)
    model, params, tokenizer, config = load_model_and_tokenizer(tiny_run / "best_checkpoint")
    assert config.vocab_size == 300
    assert tree_digest(tiny_run) == before


def test_finds_config_in_checkpoint_folder_and_explicit_tokenizer(tiny_run, tmp_path):
    ckpt = tmp_path / "somewhere" / "ckpt"
    shutil.copytree(tiny_run / "best_checkpoint", ckpt)
    shutil.copy(tiny_run / "model_config.json", ckpt / "model_config.json")
    with pytest.raises(FileNotFoundError, match="Could not find tokenizer.json"):
        find_run_files(ckpt)
    found = find_run_files(ckpt, tiny_run / "tokenizer.json")
    assert found == (ckpt, ckpt / "model_config.json", tiny_run / "tokenizer.json")
    load_run(ckpt, tiny_run / "tokenizer.json")


def test_run_folder_resolves_to_best_checkpoint(tiny_run):
    assert find_run_files(tiny_run)[0] == tiny_run / "best_checkpoint"


def test_missing_files_messages(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        load_run(tmp_path / "nope")
    lonely = tmp_path / "a" / "best_checkpoint"
    shutil.copytree(tiny_run / "best_checkpoint", lonely)
    with pytest.raises(FileNotFoundError, match=r"Model config not found \(tried: .*model_config.json"):
        load_run(lonely)
    with pytest.raises(FileNotFoundError, match="Could not find tokenizer.json"):
        load_run(tiny_run / "best_checkpoint", tmp_path / "missing.json")


@pytest.mark.parametrize("damage,fragment", [
    ("tokenizer_not_json", "tokenizer is not valid JSON"),
    ("tokenizer_wrong_json", "not a Hugging Face tokenizer"),
    ("config_not_json", "model config is not valid JSON"),
    ("config_missing_field", "missing key 'd_model'"),
    ("config_mismatch", "does not match the model config"),
    ("empty_checkpoint", "holds no Orbax checkpoint"),
    ("corrupted_checkpoint", "corrupted or unreadable"),
    ("vocab_too_small", "smaller than the tokenizer"),
])
def test_bad_runs_raise_clear_errors(tiny_run, tmp_path, damage, fragment):
    run = copy_run(tiny_run, tmp_path)
    config_text = (run / "model_config.json").read_text()
    if damage == "tokenizer_not_json":
        (run / "tokenizer.json").write_text("<html>")
    elif damage == "tokenizer_wrong_json":
        (run / "tokenizer.json").write_text('{"hello": 1}')
    elif damage == "config_not_json":
        (run / "model_config.json").write_text("vocab_size=3")
    elif damage == "config_missing_field":
        (run / "model_config.json").write_text(config_text.replace('"d_model"', '"unrelated"'))
    elif damage == "config_mismatch":
        (run / "model_config.json").write_text(config_text.replace('"d_model": 32', '"d_model": 64'))
    elif damage == "vocab_too_small":
        (run / "model_config.json").write_text(config_text.replace('"vocab_size": 300', '"vocab_size": 100'))
    elif damage == "empty_checkpoint":
        shutil.rmtree(run / "best_checkpoint")
        (run / "best_checkpoint").mkdir()
    elif damage == "corrupted_checkpoint":
        for path in (run / "best_checkpoint").rglob("*"):
            if path.is_file() and path.stat().st_size > 0:
                path.write_bytes(b"\x00garbage" * 3)
    before = tree_digest(run)
    with pytest.raises(ValueError) as err:
        load_run(run / "best_checkpoint")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    assert tree_digest(run) == before


def test_shape_mismatch_names_parameter_paths(tiny_run):
    with pytest.raises(ValueError, match=r"embedding/?\S* \(300, 32\) vs \(400, 32\)$"):
        restore_params(tiny_run / "best_checkpoint", tiny_config(vocab_size=400))
    with pytest.raises(ValueError, match=r"blocks/0/attn/qkv/kernel \(32, 96\) vs \(64, 192\).*and \d+ more"):
        restore_params(tiny_run / "best_checkpoint", tiny_config(d_model=64))


def test_interrupted_save_keeps_previous_checkpoint(tiny_run, tiny_model, tmp_path, monkeypatch):
    _, params, _ = tiny_model
    run = copy_run(tiny_run, tmp_path)
    zeros = jax.tree_util.tree_map(np.zeros_like, pure_params(params))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(zeros, run / "best_checkpoint")
    monkeypatch.undo()
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, params)
    assert sorted(p.name for p in run.iterdir()) == ["best_checkpoint", "model_config.json", "tokenizer.json"]
    save_checkpoint(zeros, run / "best_checkpoint")
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, zeros)


def test_save_run_writes_seed_layout(tiny_model, tiny_tok, tmp_path):
    model, params, config = tiny_model
    path = save_run(tmp_path / "out", params, config, tiny_tok)
    assert path == (tmp_path / "out" / "best_checkpoint").absolute()
    assert sorted(os.listdir(tmp_path / "out")) == ["best_checkpoint", "model_config.json", "tokenizer.json"]


def save_tree(run: Path, tree) -> None:
    shutil.rmtree(run / "best_checkpoint")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((run / "best_checkpoint").absolute(), tree)


def test_train_state_never_loads_optimiser_moments(tiny_run, tiny_model, tmp_path):
    _, params, _ = tiny_model
    run = copy_run(tiny_run, tmp_path)
    zeros = jax.tree_util.tree_map(np.zeros_like, pure_params(params))
    save_tree(run, {"params": pure_params(params), "step": np.int32(3), "opt_state": {"mu": zeros, "nu": zeros}})
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, params)
    assert not same_params(restored, zeros)


def test_params_only_inside_optimiser_state_is_an_error(tiny_run, tiny_model, tmp_path):
    _, params, _ = tiny_model
    run = copy_run(tiny_run, tmp_path)
    save_tree(run, {"step": np.int32(3), "opt_state": {"mu": pure_params(params)}})
    with pytest.raises(ValueError, match=r"only inside optimiser state \(opt_state/mu\)"):
        load_run(run / "best_checkpoint")


def test_ambiguous_parameter_trees_name_the_candidates(tiny_run, tiny_model, tmp_path):
    _, params, _ = tiny_model
    run = copy_run(tiny_run, tmp_path)
    save_tree(run, {"student": pure_params(params), "teacher": pure_params(params)})
    with pytest.raises(ValueError, match=r"several parameter trees match the model \(student, teacher\)"):
        load_run(run / "best_checkpoint")
    save_tree(run, {"params": pure_params(params), "ema": jax.tree_util.tree_map(np.zeros_like, pure_params(params))})
    _, restored, _, _ = load_run(run / "best_checkpoint")
    assert same_params(restored, params)


def test_load_run_reports_the_seed_lines(tiny_run):
    lines = []
    load_run(tiny_run, log=lines.append)
    assert lines == [f"Note: {tiny_run} is a run folder; using its checkpoint {tiny_run / 'best_checkpoint'}",
                     f"Loading tokenizer from: {tiny_run / 'tokenizer.json'}",
                     f"Loading config from: {tiny_run / 'model_config.json'}", "Creating model...",
                     f"Loading checkpoint from: {tiny_run / 'best_checkpoint'}"]
