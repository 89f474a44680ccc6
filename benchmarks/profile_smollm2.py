"""Where a SmolLM2-135M decode step goes: each part of the step compiled alone and timed (median of
30), at batch 1 and 8, beside the floor of each part (its weight bytes over the measured bandwidth).

The parts are those of ``generation._step``: the 30 transformer layers (one layer split into its
attention and its MLP), the final norm with the tied 49,152 x 576 head, the classic sampler with its
draw, and the trace's record. ``docs/architecture.md`` ("Where a decode step goes") quotes a run.

Usage: ``python benchmarks/profile_smollm2.py [--batches 1 8]``
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
from bench_smollm2 import bandwidth_gbs  # noqa: I001 - this folder, beside this script
from flax import nnx

from txtgen_nb import load_model_and_tokenizer, sampling, smollm2_path
from txtgen_nb.model import init_cache
from txtgen_nb.trace import TraceLayout, record_step, trace_buffers

SLOTS, SLOT = 144, 20  # a cache of 144 slots (16-token prompt bucket + 128 steps), writing slot 20


def median_ms(fn, *args, repeats: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def parts(model, params, batch: int) -> dict[str, tuple[float, float]]:
    """``{part: (milliseconds, weight bytes)}`` for one decode step of ``batch`` rows."""
    graphdef, config = nnx.graphdef(model), model.config
    cache = init_cache(config, batch, SLOTS)
    x = jnp.zeros((batch, 1, config.d_model), jnp.float32)
    positions = jnp.full((batch, 1), SLOT)
    mask = jnp.broadcast_to(jnp.arange(SLOTS)[None, None] <= SLOT, (batch, 1, SLOTS))
    block = lambda p: nnx.merge(graphdef, p).blocks[0]  # noqa: E731

    @jax.jit
    def whole(p, tokens, cache):
        return nnx.merge(graphdef, p)(tokens, positions=positions, mask=mask, cache=cache, cache_index=SLOT)

    @functools.partial(jax.jit, static_argnames="n")
    def layers(p, x, cache, n: int = config.num_layers):
        m = nnx.merge(graphdef, p)
        for i in range(n):
            x, _ = m.blocks[i](x, positions, mask, cache[i], SLOT)
        return x

    attention = jax.jit(lambda p, x, cache: block(p).attn(block(p).ln1(x), positions, mask, cache[0], SLOT))
    mlp = jax.jit(lambda p, x: block(p).mlp(block(p).ln2(x)))
    head = jax.jit(lambda p, x: nnx.merge(graphdef, p).embed.attend(nnx.merge(graphdef, p).ln_f(x)))
    logits = jnp.zeros((batch, config.vocab_size))
    settings = jax.tree.map(lambda v: jnp.broadcast_to(jnp.asarray(v), (batch,)), sampling.SamplingSettings(0.8, 50))
    keys = jax.random.split(jax.random.key(0), batch)

    @jax.jit
    def sampler(logits, s, keys):
        kept = sampling.filter_logits_fast(logits, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                           min_p=s.min_p)
        return jax.vmap(jax.random.categorical)(keys, kept)

    buffers = trace_buffers(TraceLayout(128, 256, False), batch, config.vocab_size)
    record = jax.jit(lambda b, logits: record_step(b, jnp.int32(3), logits))
    nbytes = lambda tree: sum(leaf.nbytes for leaf in jax.tree.leaves(tree))  # noqa: E731
    layer = nbytes(nnx.state(model.blocks[0]))
    attn_bytes = nbytes(nnx.state(model.blocks[0].attn))
    embed = model.embed.embedding[...].nbytes
    return {
        "whole model call (30 layers + head)": (median_ms(whole, params, jnp.zeros((batch, 1), jnp.int32), cache),
                                                nbytes(params)),
        "30 layers": (median_ms(layers, params, x, cache), config.num_layers * layer),
        "1 layer": (median_ms(functools.partial(layers, n=1), params, x, cache), layer),
        "1 layer: attention (norm, q/k/v/o, rope, cache)": (median_ms(attention, params, x, cache), attn_bytes),
        "1 layer: SwiGLU MLP (norm, 3 matmuls)": (median_ms(mlp, params, x), layer - attn_bytes),
        "final norm + tied head 576 x 49,152": (median_ms(head, params, x), embed),
        "sampler (T, top-k, top-p, min-p) + draw": (median_ms(sampler, logits, settings, keys), 0),
        "trace record (top-256 window, logsumexp, entropy)": (median_ms(record, buffers, logits), 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    bandwidth = bandwidth_gbs() * 1e9
    model, params, _tok, _config = load_model_and_tokenizer(smollm2_path())
    print(f"SmolLM2-135M decode step, float32; memory bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    print("| part | " + " | ".join(f"batch {b}" for b in args.batches) + " | weights | floor |")
    print("|---|" + "---|" * len(args.batches) + "---|---|")
    rows = {b: parts(model, params, b) for b in args.batches}
    for name, (_ms, weight_bytes) in rows[args.batches[0]].items():
        times = " | ".join(f"{rows[b][name][0]:.2f} ms" for b in args.batches)
        floor = f"{weight_bytes / bandwidth * 1e3:.2f} ms" if weight_bytes else ""
        print(f"| {name} | {times} | {weight_bytes / 1e6:.1f} MB | {floor} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
