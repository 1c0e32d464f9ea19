"""The ``chat.py`` and README shipped with an exported onnxruntime-genai folder (text: they run without Slimline)."""
from __future__ import annotations

SCRIPT = '''#!/usr/bin/env python3
"""Generate text with the ONNX language model in this folder: onnxruntime-genai, KV cache, offline.

Needs only onnxruntime-genai (requirements.txt):
    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python chat.py "Once upon a time"            one prompt, greedy continuation
    .venv/bin/python chat.py --chat                        interactive (empty line or Ctrl-D quits)
    .venv/bin/python chat.py --template "What is ONNX?"    wrap the prompt in the model's chat template

Greedy decoding unless --sample. The prompt's prefill time and decode tokens/s go to stderr.
Nothing is downloaded: the model, its config and the tokenizer are the files beside this script.
"""
import argparse
import json
import os
import sys
import time

import onnxruntime_genai as og

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = "__MODEL_DIR__"          # the genai folder, relative to this script
ADD_BOS = __ADD_BOS__                # the model saw a BOS token in front of every text in training
BOS_ID = __BOS_ID__
HAS_TEMPLATE = __HAS_TEMPLATE__      # the tokenizer carries a chat template


def load(model_dir, threads):
    config = og.Config(model_dir)
    if threads:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    return model, og.Tokenizer(model)


def chat_template(model_dir):
    """The template file transformers saves beside the tokenizer, if any (else the tokenizer's own)."""
    path = os.path.join(model_dir, "chat_template.jinja")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    return None


def encode(tokenizer, text, template, model_dir):
    if template:
        text = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": text}]),
                                             template_str=chat_template(model_dir), add_generation_prompt=True)
    ids = [int(t) for t in tokenizer.encode(text)]
    if ADD_BOS and (not ids or ids[0] != BOS_ID):
        ids = [BOS_ID] + ids
    return ids


def generate(model, tokenizer, ids, max_new, sample, echo):
    """(new token ids, prefill ms, decode tokens/s); stops at the end-of-sequence token."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_new, do_sample=sample)
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(ids)
    t1 = time.perf_counter()
    stream = tokenizer.create_stream()
    tokens = []
    while not gen.is_done() and len(tokens) < max_new:
        gen.generate_next_token()
        token = int(gen.get_next_tokens()[0])
        tokens.append(token)
        if echo:
            print(stream.decode(token), end="", flush=True)
    t2 = time.perf_counter()
    return tokens, (t1 - t0) * 1000.0, len(tokens) / max(t2 - t1, 1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", help="text to continue (omit with --chat)")
    parser.add_argument("--chat", action="store_true", help="interactive: one prompt per line")
    parser.add_argument("--template", action="store_true", help="wrap prompts in the chat template")
    parser.add_argument("--max-new", type=int, default=128, help="new tokens at most (default 128)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--model", default=os.path.join(HERE, MODEL_DIR), help="the genai folder")
    parser.add_argument("--prompt-ids", help="comma-separated token ids instead of text (for checks)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    model, tokenizer = load(args.model, args.threads)
    template = args.template or (args.chat and HAS_TEMPLATE)
    if template and not HAS_TEMPLATE:
        sys.exit("error: this tokenizer has no chat template; leave out --template")
    if args.chat:
        while True:
            try:
                text = input("> ")
            except EOFError:
                break
            if not text.strip():
                break
            tokens, prefill, speed = generate(model, tokenizer, encode(tokenizer, text, template, args.model),
                                              args.max_new, args.sample, echo=True)
            print(f"\\n[{len(tokens)} tokens, prefill {prefill:.0f} ms, {speed:.1f} tokens/s]", file=sys.stderr)
        return 0
    if args.prompt_ids:
        ids = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    elif args.prompt is not None:
        ids = encode(tokenizer, args.prompt, template, args.model)
    else:
        parser.error("give a prompt, --prompt-ids or --chat")
    tokens, prefill, speed = generate(model, tokenizer, ids, args.max_new, args.sample, echo=not args.json)
    if args.json:
        print(json.dumps({"prompt_tokens": len(ids), "tokens": tokens, "text": tokenizer.decode(tokens),
                          "prefill_ms": prefill, "decode_tokens_per_s": speed}))
    else:
        print(flush=True)
    print(f"[{len(ids)} prompt tokens, {len(tokens)} new, prefill {prefill:.0f} ms, {speed:.1f} tokens/s]",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def render_chat(model_dir: str = ".", *, bos_id: int | None = None, has_template: bool = False) -> str:
    """chat.py for a genai folder at ``model_dir`` (relative to the script); ``bos_id``: prepend it to prompts."""
    return (SCRIPT.replace("__MODEL_DIR__", model_dir)
            .replace("__ADD_BOS__", "True" if bos_id is not None else "False")
            .replace("__BOS_ID__", str(int(bos_id) if bos_id is not None else -1))
            .replace("__HAS_TEMPLATE__", "True" if has_template else "False"))


def render_readme(*, name: str, precision: str, source: str, files: list[str], verified: list[str],
                  requirements: list[str], created: str, slimline_version: str, has_template: bool) -> str:
    """README.md of an exported genai folder: what is in it, how to run it, how it was checked."""
    listing = "\n".join(f"- `{f}`" for f in files)
    checks = "\n".join(f"- {v}" for v in verified)
    reqs = ", ".join(requirements)
    chat = ('.venv/bin/python chat.py --chat                     # interactive, with the chat template'
            if has_template else '.venv/bin/python chat.py --chat                     # interactive')
    return f"""# {name}: ONNX language model for onnxruntime-genai

A decoder with a KV cache ({precision}), its `genai_config.json` and tokenizer: everything
onnxruntime-genai needs to generate text, offline, on CPU. Exported by Slimline {slimline_version}
on {created} from `{source}`.

## Files

{listing}

## Run it

```
python -m venv .venv && .venv/bin/pip install -r requirements.txt    # {reqs}
.venv/bin/python chat.py "Once upon a time"         # greedy continuation, tokens/s on stderr
{chat}
.venv/bin/python chat.py --help
```

From Python: `model = onnxruntime_genai.Model("this folder")`, then `onnxruntime_genai.Tokenizer(model)`
and `onnxruntime_genai.Generator` (see chat.py, about 40 lines).

## Checked before it was written

{checks}
"""
