"""What capturing the attention of a Hugging Face BERT costs (PyTorch, CPU, 1 thread).

    python benchmarks/hf_attention_torch.py [--rounds 40] [--steps 1] [--hidden 256] [--layers 4] [--seq 128]

Four identical BertForSequenceClassification twins (random init, default SDPA attention) live in
one process: a bare one (A), a second bare one (A/A control: what two identical models differ by on
this machine), one with a Hook saving "attention" on no step after 0 (the cost of the tap on unsaved
steps) and one saving it on every step (the cost on a saved step: the attention modules run under
a TorchFunctionMode that recomputes softmax(q k^T * scale + mask) from their SDPA call, and the
probabilities, (batch, heads, seq, seq) per layer, are copied and written). Each round trains each
twin --steps steps (forward, loss, backward, SGD) in a shuffled order; per round each time is divided
by the bare twin's; medians and quartiles over rounds are printed, with milliseconds per step.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tensortap as tt  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    import transformers as T

    torch.set_num_threads(1)
    cfg = T.BertConfig(vocab_size=1000, hidden_size=args.hidden, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                       max_position_embeddings=args.seq, num_labels=2)

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return T.BertForSequenceClassification(cfg).train()

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    mask[:, -args.seq // 4:] = 0  # padded keys, as real batches have
    labels = torch.randint(0, 2, (args.batch,), generator=g)
    tmp = tempfile.mkdtemp(prefix="tt-hfatt-")
    twins: Dict[str, torch.nn.Module] = {"bare": build(), "bare (A/A)": build()}
    hooks = []
    for name, sc in (("tap, unsaved steps", tt.SaveConfig(save_steps=[0])), ("tap, every step saved",
                                                                              tt.SaveConfig(save_interval=1))):
        m = build()
        hook = tt.Hook(os.path.join(tmp, name.split(",")[1].strip().replace(" ", "_")),
                       include_collections=["attention"], save_config=sc)
        hook.register(m)
        hooks.append(hook)
        twins[name] = m
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in twins.items()}

    def run(name: str) -> float:
        m, opt = twins[name], opts[name]
        t0 = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad()
            m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / args.steps

    for name in twins:  # warm-up (and step 0, which the unsaved-steps twin saves)
        run(name)
    times: Dict[str, List[float]] = {k: [] for k in twins}
    for _ in range(args.rounds):
        order = list(twins)
        random.shuffle(order)
        for name in order:
            times[name].append(run(name))
    for hook in hooks:
        hook.close()
    per_step_mb = args.layers * args.batch * args.heads * args.seq * args.seq * 4 / 1e6
    print(f"BERT hidden {args.hidden}, {args.layers} layers x {args.heads} heads, batch {args.batch} x seq {args.seq} "
          f"(attention {per_step_mb:.1f} MB a saved step), torch {torch.__version__}, transformers {T.__version__}, "
          f"1 thread, {args.rounds} rounds x {args.steps} steps, load average {os.getloadavg()[0]:.1f}")
    base = np.array(times["bare"])
    for name, ts in times.items():
        r = np.array(ts) / base
        q1, q2, q3 = np.percentile(r, [25, 50, 75])
        print(f"  {name:24s} {np.median(ts) * 1e3:8.1f} ms/step   {q2:.3f}x (quartiles {q1:.3f}-{q3:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
