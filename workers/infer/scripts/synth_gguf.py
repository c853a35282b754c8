# Writes a synthetic ternary LLaMA model as an F16 GGUF, in the benchmark shapes of
# `bench-infer` (700m: BitNet b1.58-large; 2b: BitNet 2B-4T, tied): projections hold {-s, 0, s}
# per tensor (exactly ternary), embedding/output random f16, norms 1. llama.cpp's
# llama-quantize then makes TQ2_0 files that llama.cpp and magnet-infer both read, for a
# comparison of the two engines on one model and one machine (see ../README.md).
#
#   python3 synth_gguf.py OUT.gguf [700m|2b]     (needs numpy and llama.cpp's gguf-py:
#                                                 GGUF_PY=/path/to/llama.cpp/gguf-py)
import os
import sys
import numpy as np
sys.path.insert(0, os.environ.get('GGUF_PY', 'gguf-py'))
import gguf

out = sys.argv[1]
shape = sys.argv[2] if len(sys.argv) > 2 else '700m'
if shape == '700m':
    d, L, H, KV, F, V, tied = 1536, 24, 16, 16, 4096, 32000, False
else:
    d, L, H, KV, F, V, tied = 2560, 30, 20, 5, 6912, 128256, True
hd = d // H
rng = np.random.default_rng(1)
w = gguf.GGUFWriter(out, 'llama')
w.add_context_length(4096)
w.add_embedding_length(d)
w.add_block_count(L)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(KV)
w.add_rope_dimension_count(hd)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(V)
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
# Byte-level BPE: the 256 byte symbols of GPT-2, one merge, then control fillers.
bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
byte_tok = [chr(c) for _, c in sorted(zip(bs, cs))]
tokens = byte_tok + ['Ġt'] + [f'<x{i}>' for i in range(V - 257)]
types = [1] * 257 + [3] * (V - 257)
w.add_tokenizer_model('gpt2')
w.add_tokenizer_pre('default')
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges(['Ġ t'])
w.add_bos_token_id(V - 1)
w.add_eos_token_id(V - 2)
w.add_add_bos_token(False)

def tern(rows, cols):
    s = np.float16(0.02 + 0.01 * rng.random())
    q = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    return (q.astype(np.float16) * s)

w.add_tensor('token_embd.weight', (rng.standard_normal((V, d)) * 0.02).astype(np.float16))
for i in range(L):
    w.add_tensor(f'blk.{i}.attn_norm.weight', np.ones(d, dtype=np.float32))
    w.add_tensor(f'blk.{i}.ffn_norm.weight', np.ones(d, dtype=np.float32))
    w.add_tensor(f'blk.{i}.attn_q.weight', tern(d, d))
    w.add_tensor(f'blk.{i}.attn_k.weight', tern(KV * hd, d))
    w.add_tensor(f'blk.{i}.attn_v.weight', tern(KV * hd, d))
    w.add_tensor(f'blk.{i}.attn_output.weight', tern(d, d))
    w.add_tensor(f'blk.{i}.ffn_gate.weight', tern(F, d))
    w.add_tensor(f'blk.{i}.ffn_up.weight', tern(F, d))
    w.add_tensor(f'blk.{i}.ffn_down.weight', tern(d, F))
w.add_tensor('output_norm.weight', np.ones(d, dtype=np.float32))
if not tied:
    w.add_tensor('output.weight', (rng.standard_normal((V, d)) * 0.02).astype(np.float16))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print('wrote', out)
