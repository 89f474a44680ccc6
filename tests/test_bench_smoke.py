"""Smoke test of benchmarks/bench_generate.py: the quick run's table and its no-recompile check.

No wall-clock assertions: timings on a shared CPU are noise; only that numbers exist and are > 0.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

from conftest import REPO

EXPECTED_ROWS = [
    "model", "parameters", "memory bandwidth", "matmul rate", "floor (a) weights / bandwidth",
    "floor (b) FLOPs / matmul rate", "floor = max(a, b)",
    "compiled decode, batch 1", "compiled decode step, batch 1", "compiled decode, batch 4",
    "compiled decode step, batch 4", "generate() end to end, batch 1", "generate() end to end, batch 4",
    "naive loop, batch 1", "naive loop, batch 4", "speed-up vs naive, batch 1", "speed-up vs naive, batch 4",
    "decode step vs floor, batch 1", "first call, new prompt bucket", "recompiles after changing settings",
    "trace memory, this model, batch 4, 100 new tokens", "trace memory, GPT-2-small shape, batch 4, 100 new tokens",
    "decode with trace on vs off, batch 1", "decode with trace on vs off, batch 4",
    "decode: one chunk boundary, batch 1", "generate_stream() vs generate(), batch 1",
]
TORCH_CASES = ("this model's shape as GPT-2", "tiny Llama-style")
CLI_ROWS = ["CLI quick start (seed command, XLA cache warm)"]
TORCH_ROWS = [row for case in TORCH_CASES for row in (
    f"PyTorch twin, {case}", f"ours / PyTorch, {case}, batch 1", f"ours / PyTorch, {case}, batch 2",
    f"ours / floor, {case}, batch 1")]
SIGNED_ROWS = ("recompiles after changing settings", "decode with trace on vs off, batch 1",
               "decode with trace on vs off, batch 4", "generate_stream() vs generate(), batch 1")
NUMERIC_ROWS = EXPECTED_ROWS[1:]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_generate", REPO / "benchmarks" / "bench_generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_generate"] = module
    spec.loader.exec_module(module)
    return module


def _number(text: str) -> float:
    match = re.search(r"-?\d[\d,]*\.?\d*", text)
    assert match, f"no number in {text!r}"
    return float(match.group().replace(",", ""))


@pytest.mark.slow
def test_quick_run_prints_full_table_without_recompiles(bench, capsys):
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows, notes = {}, {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("metric", "---"):
            rows[cells[0]], notes[cells[0]] = cells[1], cells[2]
    if bench.torch_available():
        assert list(rows) == EXPECTED_ROWS + TORCH_ROWS + CLI_ROWS
        for name in TORCH_ROWS:
            assert _number(rows[name]) > 0, (name, rows[name])
        for case in TORCH_CASES:  # the same weights on both sides: our importer's conversion
            diff = re.search(r"max logit difference (\S+),", notes[f"PyTorch twin, {case}"]).group(1)
            assert float(diff) < 1e-4, (case, diff)
    else:
        assert list(rows) == EXPECTED_ROWS + ["PyTorch comparison"] + CLI_ROWS
        assert "PyTorch rows skipped" in out
    assert rows["model"].startswith("random tiny model")
    for name in NUMERIC_ROWS:
        if name not in SIGNED_ROWS and name != "decode: one chunk boundary, batch 1":  # a difference: may be < 0
            assert _number(rows[name]) > 0, (name, rows[name])
    for name in SIGNED_ROWS[1:]:
        assert rows[name].endswith("%") and np.isfinite(_number(rows[name])), (name, rows[name])
    assert rows["recompiles after changing settings"] == "0"
    assert _number(rows["trace memory, GPT-2-small shape, batch 4, 100 new tokens"]) < 50  # MB
    assert "recompiles after changing settings: 0" in out
    cli = rows[CLI_ROWS[0]]  # the CLI imports jax and generates: slower than importing jax alone
    import_jax = re.search(r"import jax': (\S+) s", notes[CLI_ROWS[0]]).group(1)
    assert _number(cli) > float(import_jax) > 0, (cli, import_jax)


def test_fixed_token_count_and_settings_do_not_recompile(bench):
    settings = bench.BenchSettings.quick_settings()
    subject = bench.load_subject(settings)
    counter = bench.CompileCounter()
    try:
        tokens, lengths = bench.run_compiled(bench.compiled_inputs(subject, 2, 6))
        assert (lengths[:2] == 6).all()  # no stop ids: every row decodes exactly the asked count
        before_cache = bench.generation.compiled_programs()
        before_events = counter.count_programs()
        for change in [dict(temperature=0.0), dict(top_k=0, top_p=0.5), dict(min_p=0.2, seed=99), dict(top_k=3)]:
            _, lengths = bench.run_compiled(bench.compiled_inputs(subject, 2, 3, **change))
            assert (lengths[:2] == 3).all()
        assert counter.count_programs() == before_events
        assert bench.generation.compiled_programs() == before_cache
        # the counter does see a real compilation (a new batch bucket)
        bench.run_compiled(bench.compiled_inputs(subject, 8, 2))
        assert counter.count_programs() == before_events + 3  # its start, its prefill chunk (8 slots a row) and its loop
    finally:
        counter.close()


def test_torch_rows_say_skipped_without_torch(bench, monkeypatch):
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    subject = bench.load_subject(bench.BenchSettings.quick_settings())
    rows, raw = bench.torch_rows(subject, bench.BenchSettings.quick_settings(), bandwidth=1e10)
    assert raw == {} and rows[0][:2] == ("PyTorch comparison", "skipped")


def test_naive_loop_and_floor_helpers(bench):
    subject = bench.load_subject(bench.BenchSettings.quick_settings())
    out = bench.naive_generate(subject, 2, 3)
    assert out.shape == (2, 3) and (out >= 0).all() and (out < subject.config.vocab_size).all()
    assert bench.decode_flops_per_token(subject, 10) > 2 * subject.num_params
    bw_jax, bw_np = bench.memory_bandwidth(4, 1)
    assert bw_jax > 0 and bw_np > 0 and bench.matmul_rate(64, 1) > 0
    assert np.isfinite(subject.param_bytes) and subject.param_bytes == 4 * subject.num_params
