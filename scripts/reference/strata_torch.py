#!/usr/bin/env python3
"""Strata's model in PyTorch, written from Strata's own definitions, to check Strata against.

GPT-2 and Llama families, dense or mixture-of-experts, as src/model/*.cpp and kernels/cpu/*
compute them (each function below names the code it restates). Loads a Strata checkpoint (any
layout: every rank file's slices are assembled) and the run's config (the checkpoint manifest's,
or a resolved --config), runs one forward and backward on a batch of token ids and gives the
logits, the cross-entropy, the MoE auxiliary losses and the gradient of every parameter, by
default in f64.

usage:
  strata_torch.py ids OUT --vocab V [--batch 2] [--seq 16] [--ignore 3] [--seed 0]
      A batch for both sides: OUT (HDF5) /ids and /targets, int32 [batch, seq], ids uniform below
      V, the targets the ids shifted by one (a random next id at the end), `--ignore` of them -1.
  strata_torch.py check --checkpoint CKPT --ids IDS --strata DUMP... [--config YAML]
                        [--device cpu|cuda] [--dtype f64|f32] [--tolerance 1e-5]
                        [--tolerance-f64 1e-10] [--out REF.h5] [--label NAME]
      Runs the reference once and compares it with each DUMP, what tests/reference/dump_grads.cpp
      (or any backend's dump of the same layout) wrote for the same checkpoint and ids: the loss,
      the auxiliary loss, the logits and every gradient, each by
          error = max |strata - reference| / max |reference|   (per tensor; 0 when both are 0)
      within --tolerance for an f32 dump or reference, --tolerance-f64 when both are f64. For a
      gradient the divisor is at least GRADIENT_FLOOR x the largest max |reference| of all
      gradients (see there). The max norm finds one wrong element (a mask entry, a row, a position) that a
      Frobenius ratio would average away; dividing by the tensor's largest magnitude rather than
      each element's own keeps near-zero elements, whose f32 rounding is relative to their
      neighbours and not to themselves, from failing a correct implementation. The MoE routing
      counts must agree exactly. --out also writes the reference in the dump's layout.
exit status: 0 pass, 1 fail, 2 bad usage or input.
"""
import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch
import yaml

# The model keys the reference reads. Their defaults live in src/model/config.h only: a --config
# must be resolved (`strata config --config FILE --set ...` prints one); a checkpoint's manifest
# always is.
MODEL_KEYS = ("vocab_size", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff", "max_seq_len", "norm",
              "activation", "position", "rope_theta", "tie_embeddings", "norm_eps", "bias")
MOE_KEYS = ("n_experts", "top_k", "capacity_factor", "aux_loss_coef", "z_loss_coef", "every")


# A gradient tensor more than this much smaller than the model's largest gradient is judged on
# that scale instead of its own: its rounding comes from sums of terms the size of the larger
# gradients. (The key biases' gradient, for one, is exactly 0 without RoPE, since softmax ignores
# a shift of all of a query's scores: the f64 reference has ~1e-20 there, Strata's f32 rounding a
# few 1e-6 of this floor.)
GRADIENT_FLOOR = 1e-3


def fail(message):
    print(f"strata_torch: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Inputs: config, checkpoint, ids.

def model_config(checkpoint, config_path):
    """The `model` section: from --config when given, else the checkpoint manifest's."""
    if config_path:
        source = f"config '{config_path}'"
        with open(config_path) as f:
            root = yaml.safe_load(f) or {}
    else:
        source = f"the manifest of checkpoint '{checkpoint}'"
        manifest = os.path.join(checkpoint, "manifest.yaml")
        if not os.path.isfile(manifest):
            fail(f"checkpoint '{checkpoint}' has no manifest.yaml (give --config)")
        with open(manifest) as f:
            root = yaml.safe_load(yaml.safe_load(f)["config"])
    model = root.get("model") or {}
    missing = [f"model.{k}" for k in MODEL_KEYS if k not in model]
    missing += [f"model.moe.{k}" for k in MOE_KEYS if k not in (model.get("moe") or {})]
    if missing:
        fail(f"{source} lacks {', '.join(missing)}: give a resolved config "
             "(strata config --config FILE [--set ...] prints one)")
    return model


def read_stored(dataset):
    """One stored slice as numpy, bf16 and f16 (stored as u16 words, src/core/h5.cpp) widened."""
    data = dataset[()]
    kind = dataset.attrs.get("dtype", b"f32")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "bf16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    if kind == "f16":
        return data.view(np.float16).astype(np.float32)
    return data


def load_checkpoint(checkpoint):
    """Every parameter (optimizer state left out) as a whole numpy array, from any layout: each
    rank file holds slices at their offsets into the global shape (src/io/checkpoint.h)."""
    files = sorted(f for f in os.listdir(checkpoint) if f.startswith("rank-") and f.endswith(".h5"))
    if not files:
        fail(f"checkpoint '{checkpoint}' has no rank files")
    tensors = {}
    for name in files:
        with h5py.File(os.path.join(checkpoint, name), "r") as f:
            listing = bytes(f["__tensors__"][()]).decode().split("\n")
            for key in filter(None, listing):
                if key.startswith("optim/"):
                    continue
                d = f[key]
                shape = tuple(int(s) for s in d.attrs["global_shape"])
                offset = [int(o) for o in d.attrs["offset"]]
                part = read_stored(d)
                whole = tensors.setdefault(key, np.zeros(shape, dtype=np.float64))
                index = tuple(slice(o, o + n) for o, n in zip(offset, part.shape))
                whole[index] = part
    return tensors


def read_ids(path):
    with h5py.File(path, "r") as f:
        ids, targets = np.asarray(f["ids"][()], np.int64), np.asarray(f["targets"][()], np.int64)
    if ids.ndim != 2 or ids.shape != targets.shape:
        fail(f"ids file '{path}': /ids {ids.shape} and /targets {targets.shape} must both be [batch, seq]")
    return ids, targets


# ---------------------------------------------------------------------------------------------
# The model, piece by piece.

def norm(x, p, prefix, cfg):
    """src/model/norm.cpp, kernels/cpu/norms.cpp: LayerNorm (biased variance, eps inside the
    square root) with weight and bias, or RMSNorm (mean square, eps inside) with a weight."""
    eps = cfg["norm_eps"]
    w = p[prefix + ".weight"]
    if cfg["norm"] == "layernorm":
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * w + p[prefix + ".bias"]
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def linear(x, p, prefix):
    """src/model/linear.h: y = x W^T + b, W stored [out, in]."""
    y = x @ p[prefix + ".weight"].t()
    bias = p.get(prefix + ".bias")
    return y if bias is None else y + bias


def rope(x, theta):
    """kernels/cpu/rope.cpp: rotate-half pairs (j, j + head_dim/2) of every head, angle
    position x theta^(-2j / head_dim), positions from 0. x: [batch, seq, heads, head_dim]."""
    seq, head_dim = x.shape[1], x.shape[3]
    half = head_dim // 2
    j = torch.arange(half, dtype=torch.float64)
    inv_freq = theta ** (-2.0 * j / head_dim)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cos(angle).to(x.dtype).to(x.device)[None, :, None, :]
    sin = torch.sin(angle).to(x.dtype).to(x.device)[None, :, None, :]
    lo, hi = x[..., :half], x[..., half:]
    return torch.cat([lo * cos - hi * sin, hi * cos + lo * sin], dim=-1)


def attention(x, p, prefix, cfg):
    """src/model/attention.cpp, kernels/cpu/attention.h: q, k, v projections, RoPE on q and k,
    causal softmax(q k^T / sqrt(head_dim)) v with query head h reading kv head
    h / (n_heads / n_kv_heads), then wo. x: [batch, seq, d]."""
    batch, seq, d = x.shape
    heads, kv_heads = cfg["n_heads"], cfg["n_kv_heads"]
    head_dim = d // heads
    q = linear(x, p, prefix + ".wq").view(batch, seq, heads, head_dim)
    k = linear(x, p, prefix + ".wk").view(batch, seq, kv_heads, head_dim)
    v = linear(x, p, prefix + ".wv").view(batch, seq, kv_heads, head_dim)
    if cfg["position"] == "rope":
        q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [batch, heads, seq, head_dim]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
    future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return linear(out.transpose(1, 2).reshape(batch, seq, d), p, prefix + ".wo")


def gelu_tanh(x):
    """kernels/cpu/activations.cpp: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def mlp(x, p, prefix, cfg):
    """src/model/mlp.cpp: SwiGLU down(silu(gate x) * up x), or GELU proj(gelu(fc x))."""
    if cfg["activation"] == "swiglu":
        g = linear(x, p, prefix + ".gate")
        return linear(g * torch.sigmoid(g) * linear(x, p, prefix + ".up"), p, prefix + ".down")
    return linear(gelu_tanh(linear(x, p, prefix + ".fc")), p, prefix + ".proj")


def moe(x, p, prefix, cfg, routing):
    """src/model/moe.cpp (one rank): router scores, softmax in f64, the top_k experts of each row
    (larger probability first, then lower index), gates renormalised over the top_k (top_k = 1
    keeps p), capacity C = ceil(capacity_factor x rows x top_k / n_experts) filled choice by
    choice (every row's first choice before any second), then row by row, the rest dropped;
    y = sum over kept choices of gate x expert(x), summed in f64. Returns y and the auxiliary
    losses: n_experts sum_e f_e P_e (f_e, the share of choices before capacity, is a count and
    carries no gradient) and mean_rows logsumexp(scores)^2. x: [rows, d]."""
    m = cfg["moe"]
    rows, d = x.shape
    n_experts, k = m["n_experts"], m["top_k"]
    scores = linear(x, p, prefix + ".router").to(torch.float64)
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[:, None])
    order = torch.sort(probs.detach(), dim=-1, descending=True, stable=True).indices[:, :k]
    top_p = torch.gather(probs, 1, order)
    gates = top_p if k == 1 else top_p / top_p.sum(-1, keepdim=True)
    factor = m["capacity_factor"]
    capacity = math.ceil(factor * float(rows * k) / float(n_experts)) if factor > 0 else rows * k
    chosen, taken = [0] * n_experts, [[] for _ in range(n_experts)]
    experts = order.cpu().tolist()
    for j in range(k):
        for r in range(rows):
            e = experts[r][j]
            chosen[e] += 1
            if len(taken[e]) < capacity:
                taken[e].append((r, j))
    y = torch.zeros(rows, d, dtype=torch.float64, device=x.device)
    for e in range(n_experts):
        if not taken[e]:
            continue
        r_idx = torch.tensor([r for r, _ in taken[e]], device=x.device)
        j_idx = torch.tensor([j for _, j in taken[e]], device=x.device)
        out = mlp(x[r_idx], p, f"{prefix}.experts.{e}", cfg).to(torch.float64)
        y = y.index_add(0, r_idx, gates[r_idx, j_idx][:, None] * out)
    f = torch.tensor(chosen, dtype=torch.float64, device=x.device) / float(rows * k)
    aux = n_experts * (f * probs.mean(0)).sum()
    z = (lse * lse).mean()
    routing.append({"chosen": chosen, "load": [len(t) for t in taken],
                    "dropped": sum(chosen) - sum(len(t) for t in taken)})
    return y.to(x.dtype), aux, z


def forward(p, cfg, ids, targets):
    """src/model/transformer.cpp and block.cpp: embeddings (+ learned positions), pre-norm blocks
    h = x + attn(norm1 x), y = h + ffn(norm2 h), the final norm, the head (the token table when
    tied; vocab_size columns: Strata pads the vocabulary only to split it over tp ranks, and the
    padding never reaches the logits), the mean cross-entropy over targets >= 0. Returns logits
    [rows, vocab], the loss, the auxiliary losses with their coefficients, the routing counts."""
    batch, seq = ids.shape
    d = cfg["d_model"]
    x = p["embed.tokens.weight"][ids]
    if cfg["position"] == "learned":
        x = x + p["embed.positions.weight"][:seq][None]
    m = cfg["moe"]
    aux_total = torch.zeros((), dtype=torch.float64, device=x.device)
    routing = []
    for i in range(cfg["n_layers"]):
        at = f"layers.{i}"
        h = x + attention(norm(x, p, at + ".attn_norm", cfg), p, at + ".attn", cfg)
        xn = norm(h, p, at + ".mlp_norm", cfg).reshape(batch * seq, d)
        if m["n_experts"] > 0 and i % m["every"] == m["every"] - 1:
            f, aux, z = moe(xn, p, at + ".moe", cfg, routing)
            aux_total = aux_total + m["aux_loss_coef"] * aux + m["z_loss_coef"] * z
        else:
            f = mlp(xn, p, at + ".mlp", cfg)
        x = h + f.view(batch, seq, d)
    xn = norm(x, p, "final_norm", cfg).reshape(batch * seq, d)
    head = p["embed.tokens.weight"] if cfg["tie_embeddings"] else p["head.weight"]
    logits = xn @ head.t()
    t = targets.reshape(-1)
    valid = t >= 0
    if not bool(valid.any()):
        fail("every target of the batch is ignored")
    lse = torch.logsumexp(logits, dim=-1)
    picked = torch.gather(logits, 1, t.clamp(min=0)[:, None])[:, 0]
    loss = (lse - picked)[valid].sum() / valid.sum()
    return logits, loss, aux_total, routing


def reference(checkpoint, config_path, ids, targets, device, dtype):
    cfg = model_config(checkpoint, config_path)
    stored = load_checkpoint(checkpoint)
    params = {name: torch.tensor(a, dtype=dtype, device=device, requires_grad=True)
              for name, a in stored.items()}
    ids_t = torch.tensor(ids, device=device)
    targets_t = torch.tensor(targets, device=device)
    logits, loss, aux, routing = forward(params, cfg, ids_t, targets_t)
    (loss + aux).backward()  # Strata's backward(1): the gradient of loss + aux_loss
    grads = {name: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().cpu().double().numpy()
             for name, t in params.items()}
    return {"loss": float(loss), "aux_loss": float(aux), "logits": logits.detach().cpu().double().numpy(),
            "grads": grads, "routing": routing}


# ---------------------------------------------------------------------------------------------
# Commands.

def write_ids(args):
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, args.vocab, size=(args.batch, args.seq + 1))
    targets = ids[:, 1:].copy()
    ids = ids[:, :-1]
    flat = targets.reshape(-1)
    flat[rng.choice(flat.size, size=min(args.ignore, flat.size - 1), replace=False)] = -1
    with h5py.File(args.out, "w") as f:
        f["ids"] = ids.astype(np.int32)
        f["targets"] = targets.astype(np.int32)
    return 0


def max_abs(a):
    a = np.asarray(a, np.float64)
    return float(np.abs(a).max()) if a.size else 0.0


def relative_error(ours, theirs, floor=0.0):
    """max |ours - theirs| / max(max |theirs|, floor); 0 when both are 0."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(max_abs(theirs), floor)
    diff = max_abs(ours - theirs)
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def compare(path, ref, tolerances):
    """Problems found between one dump and the reference, and a one-line summary."""
    problems, errors = [], {}
    with h5py.File(path, "r") as f:
        strata_dtype = f.attrs.get("dtype", b"?")
        strata_dtype = strata_dtype.decode() if isinstance(strata_dtype, bytes) else str(strata_dtype)
        device = f.attrs.get("device", b"?")
        device = device.decode() if isinstance(device, bytes) else str(device)
        if strata_dtype not in tolerances:
            return [f"{path}: dtype '{strata_dtype}' (expected f32 or f64)"], ""
        tolerance = tolerances[strata_dtype]
        errors["loss"] = relative_error(f["loss"][()], ref["loss"])
        errors["aux_loss"] = relative_error(f["aux_loss"][()], ref["aux_loss"])
        errors["logits"] = relative_error(f["logits"][()], ref["logits"])
        dumped = set(f["grad"].keys())
        floor = GRADIENT_FLOOR * max(max_abs(g) for g in ref["grads"].values())
        floored = 0
        for name in sorted(set(ref["grads"]) | dumped):
            if name not in dumped:
                problems.append(f"gradient {name}: in the checkpoint, not in the dump")
            elif name not in ref["grads"]:
                problems.append(f"gradient {name}: in the dump, not in the checkpoint")
            elif f["grad"][name].shape != ref["grads"][name].shape:
                problems.append(f"gradient {name}: shape {f['grad'][name].shape} in the dump, "
                                f"{ref['grads'][name].shape} in the reference")
            else:
                errors["grad " + name] = relative_error(f["grad"][name][()], ref["grads"][name], floor)
                floored += max_abs(ref["grads"][name]) < floor
        moe_layers = sorted(f["moe"].keys(), key=int) if "moe" in f else []
        if len(moe_layers) != len(ref["routing"]):
            problems.append(f"{len(moe_layers)} MoE layers in the dump, {len(ref['routing'])} in the reference")
        for layer, r in zip(moe_layers, ref["routing"]):
            for key in ("chosen", "load", "dropped"):
                ours = [int(v) for v in np.atleast_1d(f["moe"][layer][key][()])]
                theirs = [int(v) for v in np.atleast_1d(r[key])]
                if ours != theirs:
                    problems.append(f"MoE layer {layer} {key}: {ours} (strata) vs {theirs} (reference)")
    for name, e in errors.items():
        if not e <= tolerance:
            problems.append(f"{name}: relative error {e:.3e} over tolerance {tolerance:g}")
    worst = max((n for n in errors if n.startswith("grad ")), key=errors.get, default="logits")
    n_grads = sum(1 for n in errors if n.startswith("grad "))
    summary = (f"strata {strata_dtype} ({device}): loss error {errors['loss']:.1e}, aux_loss {errors['aux_loss']:.1e}, "
               f"logits {errors['logits']:.1e}, {n_grads} gradients ({floored} under the floor), worst "
               f"{worst[5:]} {errors[worst]:.1e} (tolerance {tolerance:g})")
    return problems, summary


def check(args):
    ids, targets = read_ids(args.ids)
    dtype = {"f64": torch.float64, "f32": torch.float32}[args.dtype]
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda, but torch sees no CUDA device")
    try:
        ref = reference(args.checkpoint, args.config, ids, targets, torch.device(args.device), dtype)
    except KeyError as e:
        fail(f"checkpoint '{args.checkpoint}' has no tensor {e} that the config's model needs")
    except (RuntimeError, IndexError) as e:  # shapes that disagree with the config, ids past the vocabulary
        fail(f"the model of the config does not run on checkpoint '{args.checkpoint}' and these ids: {e}")
    if args.out:
        with h5py.File(args.out, "w") as f:
            f["loss"], f["aux_loss"], f["logits"] = ref["loss"], ref["aux_loss"], ref["logits"]
            for name, g in ref["grads"].items():
                f["grad/" + name] = g
            f.attrs["dtype"], f.attrs["device"] = args.dtype, "torch-" + args.device
    label = args.label or os.path.basename(os.path.normpath(args.checkpoint))
    routed = ""
    if ref["routing"]:
        routed = (f", MoE tokens per expert {[r['load'] for r in ref['routing']]}, "
                  f"{sum(r['dropped'] for r in ref['routing'])} choices dropped")
    print(f"strata_torch {label}: torch {args.dtype} on {args.device}, {ids.shape[0]}x{ids.shape[1]} tokens: "
          f"loss {ref['loss']:.9g}, aux_loss {ref['aux_loss']:.6g}{routed}")
    failed = False
    for path in args.strata:
        # The less precise side sets the tolerance: an f32 reference meets an f64 dump at f32's.
        f64_tolerance = args.tolerance_f64 if args.dtype == "f64" else args.tolerance
        problems, summary = compare(path, ref, {"f32": args.tolerance, "f64": f64_tolerance})
        if summary:
            print(f"strata_torch {label}:   {summary}")
        for line in problems:
            print(f"strata_torch {label}:   FAIL: {line}")
        failed |= bool(problems)
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_ids = sub.add_parser("ids", help="write a batch of ids and targets")
    p_ids.add_argument("out")
    p_ids.add_argument("--vocab", type=int, required=True)
    p_ids.add_argument("--batch", type=int, default=2)
    p_ids.add_argument("--seq", type=int, default=16)
    p_ids.add_argument("--ignore", type=int, default=3, help="targets set to -1 (ignored)")
    p_ids.add_argument("--seed", type=int, default=0)
    p_check = sub.add_parser("check", help="compare a Strata dump with the reference")
    p_check.add_argument("--checkpoint", required=True)
    p_check.add_argument("--config", help="the run's resolved config YAML, as `strata config` prints it "
                         "(default: the checkpoint manifest's)")
    p_check.add_argument("--ids", required=True)
    p_check.add_argument("--strata", required=True, nargs="+",
                         help="Strata's dumps (tests/reference/dump_grads.cpp), f32 or f64")
    p_check.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p_check.add_argument("--dtype", choices=["f64", "f32"], default="f64")
    p_check.add_argument("--tolerance", type=float, default=1e-5, help="for f32 dumps")
    p_check.add_argument("--tolerance-f64", type=float, default=1e-10, help="for f64 dumps")
    p_check.add_argument("--out", help="also write the reference in the dump's layout")
    p_check.add_argument("--label", help="the name the report lines start with (default: the checkpoint's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    return write_ids(args) if args.command == "ids" else check(args)


if __name__ == "__main__":
    sys.exit(main())
