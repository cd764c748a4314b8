#!/usr/bin/env python3
"""Checks a Hugging Face export of a Strata checkpoint against Strata itself.

Loads the exported folder with transformers' AutoModelForCausalLM.from_pretrained (float32), runs
it on the token ids Strata used, and compares its logits with the ones `strata generate
--dump-logits` wrote for the same tokens: max |hf - strata| / max |strata| must stay under the
tolerance (1e-4 by default: the same f32 weights, different summation orders).

usage: hf_logits.py --strata BIN --checkpoint CKPT --hf DIR --tokenizer DIR [--prompt TEXT]
exit status: 0 pass, 1 fail, 77 PyTorch or transformers missing (ctest reads it as skipped).
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
except ImportError as e:  # only the GPU machine has them
    print(f"hf_logits: skipped, {e}")
    sys.exit(77)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strata", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--hf", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--prompt", default="The jury said it did find that the election was conducted")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        npy = os.path.join(work, "logits.npy")
        subprocess.run([args.strata, "generate", "--checkpoint", args.checkpoint, "--tokenizer", args.tokenizer,
                        "--prompt", args.prompt, "--dump-logits", npy], check=True)
        ours = np.load(npy)
        ids = [int(line) for line in open(npy + ".tokens")]
    model = AutoModelForCausalLM.from_pretrained(args.hf, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        theirs = model(torch.tensor([ids])).logits[0].float().numpy()
    if theirs.shape != ours.shape:
        print(f"hf_logits: FAIL: shapes {theirs.shape} (transformers) and {ours.shape} (strata)")
        return 1
    error = float(np.abs(theirs - ours).max() / np.abs(ours).max())
    print(f"hf_logits: {type(model).__name__}, {len(ids)} tokens, max relative difference {error:.3e} "
          f"(tolerance {args.tolerance:g}); argmax agree on {int((theirs.argmax(-1) == ours.argmax(-1)).sum())}/{len(ids)}")
    return 0 if error <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
