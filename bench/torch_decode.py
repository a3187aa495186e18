#!/usr/bin/python3
"""PyTorch eager decode of the Ring-linear hybrid model, beside `ringctl bench-engine`.

A benchmark tool, not a test. It is the baseline of the README's decode speed goal: a tuned
PyTorch eager decode at batch 1 and one thread, with fp32 weights (converted once at load), a
preallocated KV cache, fused projections and matrix-vector calls for the single row.

The forward mirrors the engine (common/model/model.cc) and the reference model
(tests/common/model/reference_model.cc), as /work/shared/model-spec.md describes it:
linear-attention layers with the recurrent state S = e^g S + k v^T, o = q^T S / sqrt(D), a group
RMSNorm and a sigmoid output gate; softmax layers with a GQA KV cache (values rounded to bf16, as
the engine stores them); partial NeoX RoPE; a dense SwiGLU layer 0, then MoE with sigmoid scores,
group-limited top-k and a shared expert; RMSNorm; lm_head.

Needs Debian's torch and numpy, run with the system python:
  apt-get install -y --no-install-recommends python3-torch python3-numpy
  ringctl make-model --preset small --out /tmp/small
  # 1. faithfulness: logits of a short prompt beside `ringctl logits`
  /usr/bin/python3 bench/torch_decode.py check --model /tmp/small --ringctl build/bin/ringctl
  # 2. decode step at batch 1, one thread, interleaved with `ringctl bench-engine --threads 1`
  /usr/bin/python3 bench/torch_decode.py bench --model /tmp/small --ringctl build/bin/ringctl \
      --context 64 --steps 16 --rounds 5
  (--ringctl again for another build, e.g. an older one: every round times each of them;
  --context 4096 --synthetic fills the context with synthetic values instead of a prefill.)
Both print their raw numbers. `check` also runs the forward in float64: on `small` the engine is
within 8e-7 (relative to the largest logit) of it. The fp32 forward here can differ from both by
a few 1e-5 (sglang decay, default prompt: 2.6e-5), because fp32 noise flips the bf16 rounding of
a cached K/V value now and then; without that rounding the fp32 and float64 forwards agree
within 1.1e-6. The decode context is a prefill of `context` tokens of the ids
bench-engine uses ((i * 7919 + 13) % vocab); the step is timed from the token id to the argmax.
"""

import argparse
import glob
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_grad_enabled(False)


def read_safetensors(model_dir):
    """Every tensor of the checkpoint's *.safetensors files, as fp32 torch tensors."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        body = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            raw = body[begin:end]
            if info["dtype"] == "BF16":
                bits = raw.view(np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            elif info["dtype"] == "F32":
                arr = np.array(raw.view(np.float32))
            else:
                raise ValueError(f"{name}: unexpected dtype {info['dtype']}")
            tensors[name] = torch.from_numpy(arr.reshape(info["shape"]))
    return tensors


def base_slopes(heads):
    def power_of_two(n):
        r = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [r ** (h + 1) for h in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    p = 2 ** math.floor(math.log2(heads))
    return power_of_two(p) + power_of_two(2 * p)[0::2][: heads - p]


class Model:
    """The hybrid model with its weights in `dtype` (fp32; float64 for the check) and the state of
    one sequence (batch 1), sized for `capacity` tokens."""

    def __init__(self, model_dir, decay_variant, capacity, dtype=torch.float32):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.c = c
        w = {k: v.to(dtype) for k, v in read_safetensors(model_dir).items()}
        self.heads = c["num_attention_heads"]
        self.kv_heads = c["num_key_value_heads"]
        self.d = c["head_dim"]
        self.eps = c["rms_norm_eps"]
        self.rd = int(self.d * c["partial_rotary_factor"])
        self.scale = 1.0 / math.sqrt(self.d)
        self.groups = c["group_norm_size"]
        self.top_k = c["num_experts_per_tok"]
        self.n_group = c["n_group"]
        self.topk_group = c["topk_group"]
        self.scaling = c["routed_scaling_factor"]
        g = c["layer_group_size"]
        n = c["num_hidden_layers"]
        inner = self.heads * self.d

        # RoPE tables for every position, angles in double precision as the engine computes them.
        half = self.rd // 2
        inv_freq = c["rope_theta"] ** (-2.0 * torch.arange(half, dtype=torch.float64) / self.rd)
        angles = torch.arange(capacity, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.cos = angles.cos().to(dtype)
        self.sin = angles.sin().to(dtype)

        self.embedding = w["model.word_embeddings.weight"]
        self.final_norm = w["model.norm.weight"]
        self.lm_head = w["lm_head.weight"]
        slopes = base_slopes(self.heads)
        self.layers = []
        for i in range(n):
            p = f"model.layers.{i}."
            full = (i + 1) % g == 0 or i >= (n // g) * g
            L = {
                "full": full,
                "input_norm": w[p + "input_layernorm.weight"],
                "post_norm": w[p + "post_attention_layernorm.weight"],
                "q_norm": w[p + "attention.query_layernorm.weight"],
                "k_norm": w[p + "attention.key_layernorm.weight"],
                "dense": w[p + "attention.dense.weight"],
            }
            qkv = w[p + "attention.query_key_value.weight"]
            if full:
                L["in_proj"] = qkv
                L["k_cache"] = torch.zeros(self.kv_heads, capacity, self.d, dtype=dtype)
                L["v_cache"] = torch.zeros(self.kv_heads, capacity, self.d, dtype=dtype)
            else:
                # q, k, v and the output gate in one matrix-vector product.
                L["in_proj"] = torch.cat([qkv, w[p + "attention.g_proj.weight"]]).contiguous()
                L["g_norm"] = w[p + "attention.g_norm.weight"]
                if n <= 1:
                    f = 1.0 + 1e-5
                elif decay_variant == "hf":
                    f = 1.0 - (i - 1.0) / (n - 1.0) + 1e-5
                else:
                    f = 1.0 - i / (n - 1.0) + 1e-5
                # fp32 as the engine rounds it: g = -(float(base) * float(f)), lambda = exp(g).
                g_h = -(torch.tensor(slopes, dtype=torch.float32)
                        * torch.tensor(f, dtype=torch.float32))
                L["decay"] = torch.exp(g_h).to(dtype).view(self.heads, 1, 1)
                L["state"] = torch.zeros(self.heads, self.d, self.d, dtype=dtype)
            if i < c["first_k_dense_replace"]:
                L["moe"] = False
                L["gate_up"], L["down"] = self._swiglu(w, p + "mlp.")
            else:
                L["moe"] = True
                L["router"] = w[p + "mlp.gate.weight"]
                L["expert_bias"] = w[p + "mlp.gate.expert_bias"]
                L["experts"] = [
                    self._swiglu(w, f"{p}mlp.experts.{e}.") for e in range(c["num_experts"])
                ]
                L["shared"] = self._swiglu(w, p + "mlp.shared_experts.")
            self.layers.append(L)
        self.position = 0
        self.inner = inner

    @staticmethod
    def _swiglu(w, prefix):
        gate_up = torch.cat([w[prefix + "gate_proj.weight"], w[prefix + "up_proj.weight"]])
        return gate_up.contiguous(), w[prefix + "down_proj.weight"].contiguous()

    def reset(self):
        self.position = 0
        for L in self.layers:
            if L["full"]:
                L["k_cache"].zero_()
                L["v_cache"].zero_()
            else:
                L["state"].zero_()

    def fill_synthetic(self, context):
        """Gives the sequence `context` positions of synthetic state (a step's cost does not
        depend on the values)."""
        for L in self.layers:
            if L["full"]:
                pattern = torch.arange(L["k_cache"].numel()) % 255 / 127.0 - 1.0
                L["k_cache"].copy_(pattern.view_as(L["k_cache"]))
                L["v_cache"].copy_(pattern.view_as(L["v_cache"]))
            else:
                pattern = 1e-3 * (torch.arange(L["state"].numel()) % 17)
                L["state"].copy_(pattern.view_as(L["state"]))
        self.position = context

    def rms_norm(self, x, w):
        """RMSNorm over the last dimension of x (fp32, weight multiplied in fp32)."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, t):
        """Rotates the first rd channels of each head of x [heads, d] in place (NeoX form)."""
        half = self.rd // 2
        c, s = self.cos[t], self.sin[t]
        a = x[:, :half].clone()
        b = x[:, half : self.rd]
        x[:, :half] = a * c - b * s
        x[:, half : self.rd] = b * c + a * s

    def swiglu(self, b, gate_up, down):
        y = torch.mv(gate_up, b)
        inter = gate_up.shape[0] // 2
        return torch.mv(down, torch.nn.functional.silu(y[:inter]) * y[inter:])

    def moe(self, L, b):
        p = torch.sigmoid(torch.mv(L["router"], b))
        r = p + L["expert_bias"]
        grouped = r.view(self.n_group, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        keep = group_scores.topk(self.topk_group).indices
        masked = torch.full_like(grouped, -math.inf)
        masked[keep] = grouped[keep]
        chosen = masked.view(-1).topk(self.top_k).indices
        weights = p[chosen]
        weights = weights / (weights.sum() + 1e-20) * self.scaling
        out = self.swiglu(b, *L["shared"])
        for e, wt in zip(chosen.tolist(), weights.tolist()):
            out.add_(self.swiglu(b, *L["experts"][e]), alpha=wt)
        return out

    def attention(self, L, a, t):
        heads, d, inner = self.heads, self.d, self.inner
        kvh = self.kv_heads if L["full"] else heads
        proj = torch.mv(L["in_proj"], a)
        q = self.rms_norm(proj[:inner].view(heads, d), L["q_norm"])
        k = self.rms_norm(proj[inner : inner + kvh * d].view(kvh, d), L["k_norm"])
        v = proj[inner + kvh * d : inner + 2 * kvh * d].view(kvh, d)
        self.rope(q, t)
        self.rope(k, t)
        if not L["full"]:
            s = L["state"]
            s.mul_(L["decay"]).baddbmm_(k.unsqueeze(2), v.unsqueeze(1))
            o = torch.bmm(q.unsqueeze(1), s).view(inner) * self.scale
            o = self.rms_norm(o.view(self.groups, -1), L["g_norm"].view(self.groups, -1))
            o = o.view(inner) * torch.sigmoid(proj[inner + 2 * kvh * d :])
        else:
            # The engine's cache holds bf16 values.
            L["k_cache"][:, t] = k.bfloat16().to(k.dtype)
            L["v_cache"][:, t] = v.bfloat16().to(v.dtype)
            keys = L["k_cache"][:, : t + 1]
            values = L["v_cache"][:, : t + 1]
            qg = q.view(kvh, heads // kvh, d)
            scores = torch.bmm(qg, keys.transpose(1, 2)) * self.scale
            o = torch.bmm(torch.softmax(scores, dim=-1), values).view(inner)
        return torch.mv(L["dense"], o)

    def step(self, token):
        """One decode step at the current position; returns the logits [vocab]."""
        t = self.position
        x = self.embedding[token].clone()
        for L in self.layers:
            a = self.rms_norm(x, L["input_norm"])
            x.add_(self.attention(L, a, t))
            b = self.rms_norm(x, L["post_norm"])
            if L["moe"]:
                x.add_(self.moe(L, b))
            else:
                x.add_(self.swiglu(b, L["gate_up"], L["down"]))
        self.position += 1
        return torch.mv(self.lm_head, self.rms_norm(x, self.final_norm))


def bench_tokens(n, vocab):
    return [(i * 7919 + 13) % vocab for i in range(n)]


def check(args):
    tokens = [int(t) for t in args.tokens.split(",")]
    model = Model(args.model, args.decay_variant, len(tokens))
    ours = torch.stack([model.step(t) for t in tokens])
    del model
    # The same forward in float64: the fp32 noise floor of this model and prompt.
    model = Model(args.model, args.decay_variant, len(tokens), torch.float64)
    exact = torch.stack([model.step(t) for t in tokens])
    del model
    ringctl = (args.ringctl or ["build/bin/ringctl"])[0]
    cmd = [ringctl, "logits", "--model", args.model, "--threads", "1",
           "--decay-variant", args.decay_variant, "--tokens", args.tokens]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    engine = torch.tensor(json.loads(out)["logits"], dtype=torch.float32)
    for t in range(len(tokens)):
        diff = (ours[t] - engine[t]).abs().max().item()
        scale = engine[t].abs().max().item()
        same = ours[t].argmax().item() == engine[t].argmax().item()
        print(f"token {t}: max |diff| {diff:.3e}, max |logit| {scale:.3e}, "
              f"relative {diff / scale:.3e}, same argmax {same}")
    def relative(a, b):
        return ((a.double() - b.double()).abs().max() / b.abs().max()).item()

    rel = relative(ours, engine)
    print(f"max relative difference (to max |logit|) over {len(tokens)} tokens: torch fp32 vs "
          f"engine {rel:.3e}; against float64 torch: torch fp32 {relative(ours, exact):.3e}, "
          f"engine {relative(engine, exact):.3e}")
    return 0 if rel < args.tolerance else 1


def torch_round(model, context, steps, synthetic):
    """Prefills `context` tokens step by step (or fills them with synthetic values, as
    bench-engine --synthetic-context does), then times `steps` greedy decode steps (the first one
    untimed, as bench-engine). Returns the step times in seconds."""
    if synthetic:
        model.fill_synthetic(context)
    else:
        model.reset()
        for t in bench_tokens(context, model.c["vocab_size"]):
            model.step(t)
    token = int(model.step(1).argmax())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        token = int(model.step(token).argmax())
        times.append(time.perf_counter() - t0)
    return times


def engine_round(args, ringctl):
    cmd = [ringctl, "bench-engine", "--model", args.model, "--threads", "1",
           "--decay-variant", args.decay_variant, "--lengths", "", "--batches", "1",
           "--decode-context", str(args.context), "--decode-steps", str(args.steps),
           "--repeat", "1", "--json"] + (["--synthetic-context"] if args.synthetic else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["decode"][0]["step_seconds"]["median"]


def spread(values):
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def bench(args):
    extra = args.steps + 2
    model = Model(args.model, args.decay_variant, args.context + extra)
    engines = args.ringctl or ["build/bin/ringctl"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); context "
          f"{args.context}{' (synthetic)' if args.synthetic else ''}, {args.steps} steps a round, "
          f"median step per round (ms); engine i = {engines}")
    torch_ms, engine_ms = [], [[] for _ in engines]
    for r in range(args.rounds):
        torch_ms.append(
            statistics.median(torch_round(model, args.context, args.steps, args.synthetic)) * 1e3)
        line = f"round {r}: torch {torch_ms[-1]:.2f} ms"
        for i, ringctl in enumerate(engines):
            engine_ms[i].append(engine_round(args, ringctl) * 1e3)
            line += (f"  engine {i} {engine_ms[i][-1]:.2f} ms"
                     f" (torch/engine {torch_ms[-1] / engine_ms[i][-1]:.3f})")
        print(line, flush=True)
    print(f"torch    min/median/max {spread(torch_ms)} ms")
    for i, ms in enumerate(engine_ms):
        ratios = [t / e for t, e in zip(torch_ms, ms)]
        print(f"engine {i} min/median/max {spread(ms)} ms; torch/engine per round "
              f"{spread(ratios)}, of the medians "
              f"{statistics.median(torch_ms) / statistics.median(ms):.3f}, of the minima "
              f"{min(torch_ms) / min(ms):.3f}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "bench"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="checkpoint directory")
        p.add_argument("--ringctl", action="append",
                       help="ringctl binary (default build/bin/ringctl); bench takes several, "
                            "each timed in every round")
        p.add_argument("--decay-variant", default="sglang", choices=["sglang", "hf"])
    sub.choices["check"].add_argument("--tokens", default="1,17,300,4096,77,9,1234,5")
    sub.choices["check"].add_argument("--tolerance", type=float, default=1e-4,
                                      help="largest accepted relative difference")
    sub.choices["bench"].add_argument("--context", type=int, default=64)
    sub.choices["bench"].add_argument("--steps", type=int, default=16)
    sub.choices["bench"].add_argument("--rounds", type=int, default=5)
    sub.choices["bench"].add_argument("--synthetic", action="store_true",
                                      help="synthetic context instead of a prefill of it")
    args = parser.parse_args()
    return check(args) if args.command == "check" else bench(args)


if __name__ == "__main__":
    sys.exit(main())
