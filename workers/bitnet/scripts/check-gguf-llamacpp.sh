#!/usr/bin/env bash
# Checks that upstream llama.cpp loads a GGUF written by magnet-bitnet and generates from it.
#
#   workers/bitnet/scripts/check-gguf-llamacpp.sh target/bitnet/small-bitnet/model.gguf ["prompt"]
#
# llama.cpp comes from the `llama-cpp-python` package on PyPI, which compiles it from source
# (10+ minutes on 2 cores, needs cmake and a C/C++ compiler). It is installed once into a venv
# ($LLAMACPP_VENV, default ~/.cache/magnet-llamacpp-venv). Not run by CI.
set -euo pipefail
GGUF="${1:?usage: $0 model.gguf [prompt]}"
PROMPT="${2:-fn main() {}"
VENV="${LLAMACPP_VENV:-$HOME/.cache/magnet-llamacpp-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python (compiles llama.cpp; this takes a while)..." >&2
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/pip" install --no-cache-dir llama-cpp-python >&2
fi

"$VENV/bin/python" - "$GGUF" "$PROMPT" <<'PY'
import sys, time, math
import llama_cpp
from llama_cpp import Llama

path, prompt = sys.argv[1], sys.argv[2]
print(f"llama-cpp-python {llama_cpp.__version__}")
llm = Llama(model_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
print(f"loaded {path}: n_vocab={llm.n_vocab()} n_ctx={llm.n_ctx()} n_embd={llm.n_embd()}")
toks = llm.tokenize(prompt.encode(), add_bos=False, special=False)
print(f"prompt tokens: {toks}")
# Perplexity of the prompt under llama.cpp: a finite value well below ln(vocab) means the ternary
# weights, the permuted q/k rows and the tokenizer were all read as intended.
llm.reset()
llm.eval(toks)
nll = 0.0
for i in range(len(toks) - 1):
    row = llm.scores[i]
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    nll += lse - row[toks[i + 1]]
if len(toks) > 1:
    mean = nll / (len(toks) - 1)
    print(f"prompt loss {mean:.3f} nats/token (uniform would be {math.log(llm.n_vocab()):.3f})")
t0 = time.time()
out = llm(prompt, max_tokens=48, temperature=0.0)
dt = time.time() - t0
text = out["choices"][0]["text"]
n = out["usage"]["completion_tokens"]
print(f"generated {n} tokens in {dt:.2f}s: {prompt!r} + {text!r}")
if n == 0:
    sys.exit("llama.cpp generated nothing")
print("OK: llama.cpp loaded the GGUF and generated")
PY
