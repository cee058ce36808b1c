#!/usr/bin/env python3
# Writes tests/data/tokenizers/split_regex_vectors.json: the pieces Python's `regex` module (a backtracking engine
# with \p{L}/\p{N}, like Oniguruma in HF tokenizers) finds for the GPT-2, Llama-3 and Qwen2 split patterns.
# Run with the python3 on PATH (it has `regex`): python3 tools/gen_split_regex_vectors.py
import json
import os

import regex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}

inp = open(os.path.join(ROOT, "tests/data/tokenizers/llama.cpp-vocab-tests/ggml-vocab.gguf.inp"), encoding="utf-8").read()
texts = inp.split("\n__ggml_vocab_test__\n")[:-1]
texts += [
    "I'M here, YOU'RE there, They'Ll go; we'VE won't 'S x'",
    "a \t\n b\r\n\r\n  c  \n\t d   ",
    "12345678901 ½¾ ٣٤٥ x²",
    "\u3000full\u3000width\u00a0nbsp\u2028ls\u2029ps end  ",
    "tab\tword \tword\t\tword ?!. (x) --> \n\n\t\nfoo",
    "Ünïcödé naïve café; Straße. Привет, мир! 你好，世界！ 안녕하세요 🦙🚀",
]
out = {"generator": "tools/gen_split_regex_vectors.py, python regex " + regex.__version__, "texts": texts, "splits": {}}
for name, pattern in PATTERNS.items():
    compiled = regex.compile(pattern)
    out["splits"][name] = [[m.group(0) for m in compiled.finditer(t)] for t in texts]
with open(os.path.join(ROOT, "tests/data/tokenizers/split_regex_vectors.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(len(texts), "texts")
