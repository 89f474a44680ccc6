"""Beam search with Hugging Face's semantics (``num_beams``, ``length_penalty``, ``early_stopping``), over the
same cached model step as sampling, with every step of the search kept for the view.

Each step scores every continuation of every running beam (its summed log-probability), keeps the
``2 · num_beams`` best (enough that ``num_beams`` beams still run when some end), and files those that end
(end of turn or EOS, or the length limit) among the ``num_beams`` best finished hypotheses, each scored by
its summed log-probability over ``generated length ** length_penalty``. The loop is ``transformers``'
``_beam_search`` step for step, on the host; the model runs as one compiled step over the beams' KV cache,
reordered after each step to follow the beams that survive.

Usage::

    result = beam_search(model, params, tok, "Once upon a time", num_beams=4, max_new_tokens=40)
    result.text, result.score            # the best hypothesis and its length-penalised score
    viz.beam_view(result, tok)           # which beams survived each step
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from txtgen_nb.model import Transformer, init_cache
from txtgen_nb.tokenizer import decode, encode_prompt, special_tokens

NEG = -1.0e9  # Hugging Face's "never": added to a score that must not be chosen


@dataclasses.dataclass(frozen=True)
class BeamStep:
    """The running beams after one step of the search, best first."""

    tokens: np.ndarray  # [K] the token each beam took at this step
    parents: np.ndarray  # [K] the beam of the previous step it continues (its row in that step)
    scores: np.ndarray  # [K] summed log-probability of each beam's new tokens
    ended: list[tuple[int, int, float]]  # (parent, token, length-penalised score) of the hypotheses filed here


@dataclasses.dataclass(frozen=True)
class BeamResult:
    """The best hypothesis of a beam search, the others, and the search step by step."""

    prompt: str
    prompt_ids: list[int]
    token_ids: list[int]  # the best hypothesis' new tokens (its end-of-turn token included, as Hugging Face's)
    continuation: str  # their text without special tokens
    score: float  # summed log-probability / (generated length ** length_penalty): HF's ``sequences_scores``
    hypotheses: list[tuple[list[int], float]]  # every finished hypothesis kept, best first
    steps: list[BeamStep]

    @property
    def text(self) -> str:
        """The prompt followed by the best continuation."""
        return self.prompt + self.continuation

    def best_path(self) -> list[tuple[int, int]]:
        """``(step, beam)`` of each token of the best hypothesis; its last token is the one it ended with
        (beam ``-1``: it ended there, so it ran on as no beam). Usage: ``result.best_path()[:3]``"""
        for step, filed in enumerate(self.steps):
            for parent, token, score in filed.ended:
                if score == self.score and token == self.token_ids[-1] and step == len(self.token_ids) - 1:
                    return self._back(step - 1, parent) + [(step, -1)]
        return []

    def _back(self, step: int, beam: int) -> list[tuple[int, int]]:
        """The path of running ``beam`` at ``step`` back to the first step."""
        path = []
        while step >= 0:
            path.append((step, beam))
            beam, step = int(self.steps[step].parents[beam]), step - 1
        return path[::-1]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(graphdef, params, cache, tokens, start, pad):
    """Logits after the last of ``tokens [K, C]`` written at cache slots ``start …`` (``pad [K]``: left
    padding of each row), and the cache."""
    model: Transformer = nnx.merge(graphdef, params)
    chunk = tokens.shape[1]
    slots = jnp.arange(cache[0]["k"].shape[2])
    query = start + jnp.arange(chunk)
    positions = jnp.minimum(jnp.maximum(query[None] - pad[:, None], 0), model.config.max_len - 1)  # [K, C]
    mask = (slots[None, None] <= query[None, :, None]) & (slots[None, None] >= pad[:, None, None])  # [K, C, S]
    logits, cache = model(tokens, positions=positions, mask=mask, cache=cache, cache_index=start)
    return logits[:, -1], cache


def _reorder(cache, rows: np.ndarray):
    return jax.tree.map(lambda x: x[rows], cache)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``values``, largest first (ties: the lower index first), without
    sorting them all (SmolLM2 with 16 beams: 786k scores a step)."""
    if n >= values.size:
        return np.argsort(-values, kind="stable")
    threshold = np.partition(values, values.size - n)[values.size - n]
    candidates = np.flatnonzero(values >= threshold)  # ascending indices; every tie at the threshold
    return candidates[np.argsort(-values[candidates], kind="stable")[:n]]


def _check(num_beams, max_new_tokens, length_penalty, early_stopping) -> None:
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(length_penalty, bool) or not np.isfinite(float(length_penalty)):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def beam_search_ids(model: Transformer, params: nnx.State, prompt_ids: Sequence[int], *, stop_ids: Sequence[int],
                    num_beams: int = 4, max_new_tokens: int = 40, length_penalty: float = 1.0,
                    early_stopping: bool | str = False) -> tuple[list[tuple[list[int], float]], list[BeamStep]]:
    """Beam search from token ids: the finished hypotheses ``(new ids, score)``, best first, and the steps.

    Usage: ``hypotheses, steps = beam_search_ids(model, params, [2, 17, 40], stop_ids=[3], num_beams=4)``
    """
    _check(num_beams, max_new_tokens, length_penalty, early_stopping)
    k, prompt_len = int(num_beams), len(prompt_ids)
    if not prompt_len:
        raise ValueError("the prompt has no tokens")
    if prompt_len + max_new_tokens > model.config.max_len:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's "
                         f"context of {model.config.max_len} tokens")
    slots = max(16, 1 << (prompt_len - 1).bit_length())  # few prompt shapes, few compiles
    tokens = np.zeros((k, slots), np.int32)
    tokens[:, slots - prompt_len:] = prompt_ids
    pad = np.full(k, slots - prompt_len, np.int32)
    graphdef = nnx.graphdef(model)
    cache = init_cache(model.config, k, slots + (1 << (max_new_tokens - 1).bit_length()))
    logits, cache = _forward(graphdef, params, cache, jnp.asarray(tokens), np.int32(0), jnp.asarray(pad))
    stops = np.asarray(list(stop_ids), np.int64)
    keep = max(2, 1 + len(stops)) * k  # candidates per step (HF's beams_to_keep)
    running = np.zeros((k, 0), np.int64)  # [K, t] the running beams' new tokens
    scores = np.full(k, NEG, np.float32)
    scores[0] = 0.0  # one beam at first: the others start at "never"
    finished: list[tuple[list[int], float]] = []
    unsatisfied, steps = True, []
    for t in range(max_new_tokens):
        logp = (_log_softmax(np.asarray(logits, np.float32)) + scores[:, None]).reshape(-1)  # [K * V]
        vocab = logp.size // k
        top = _top(logp, keep)
        parent, token, top_scores = top // vocab, top % vocab, logp[top]
        ends = np.isin(token, stops) | (t + 1 >= max_new_tokens)  # [keep]
        # the running beams of the next step: the best that did not end
        alive = _top(top_scores + ends * np.float32(NEG), k)
        # the finished hypotheses: the best num_beams of those kept and those that ended among the first num_beams
        penalised = top_scores / ((t + 1) ** length_penalty)
        blocked = (len(finished) == k and early_stopping is True) or not unsatisfied
        filed = [] if blocked else [(int(parent[i]), int(token[i]), float(penalised[i]))
                                    for i in np.flatnonzero(ends[:k])]
        finished = sorted(finished + [([*running[p], tok], s) for p, tok, s in filed], key=lambda h: -h[1])[:k]
        steps.append(BeamStep(tokens=token[alive].astype(np.int32), parents=parent[alive].astype(np.int32),
                              scores=top_scores[alive].astype(np.float32), ended=filed))
        running = np.concatenate([running[parent[alive]], token[alive, None]], axis=1)
        scores = (top_scores[alive] + ends[alive] * np.float32(NEG)).astype(np.float32)
        cache = _reorder(cache, jnp.asarray(parent[alive]))
        # can a running beam still beat the worst kept hypothesis? (HF's heuristic: at the best length it could have)
        best_length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else t + 1
        worst = min(s for _, s in finished) if len(finished) == k else NEG
        unsatisfied = unsatisfied and scores[0] / (best_length ** length_penalty) > worst
        if not unsatisfied or (len(finished) == k and early_stopping is True) or ends.all():
            break
        logits, cache = _forward(graphdef, params, cache, jnp.asarray(token[alive, None].astype(np.int32)),
                                 np.int32(slots + t), jnp.asarray(pad))
    return finished, steps


def beam_search(model: Transformer, params: nnx.State, tokenizer: Tokenizer, prompt: str, *, num_beams: int = 4,
                max_new_tokens: int = 40, length_penalty: float = 1.0, early_stopping: bool | str = False,
                chat: bool = False) -> BeamResult:
    """Beam search from ``prompt`` with Hugging Face's semantics (``generate(num_beams=...)``): the best of the
    ``num_beams`` finished hypotheses. ``length_penalty`` > 0 favours longer ones (scores are summed
    log-probabilities over length ** penalty); ``early_stopping``: ``True`` stops once ``num_beams`` hypotheses
    ended, ``False`` when no running beam can still beat them (Hugging Face's heuristic), ``"never"`` only at the
    length limit. A row ends at the model's stop ids (EOS, end of turn).

    Usage: ``beam_search(model, params, tok, "Once upon a time", num_beams=8).text``
    """
    ids = encode_prompt(tokenizer, prompt, chat)
    finished, steps = beam_search_ids(model, params, ids, stop_ids=special_tokens(tokenizer).stop,
                                      num_beams=num_beams, max_new_tokens=max_new_tokens,
                                      length_penalty=length_penalty, early_stopping=early_stopping)
    best, score = finished[0]
    return BeamResult(prompt=prompt, prompt_ids=list(ids), token_ids=[int(i) for i in best],
                      continuation=decode(tokenizer, best), score=float(score), hypotheses=finished, steps=steps)
