"""Where a training step's time goes: data vs forward vs backward vs optimizer, and the top ops.

Usage:
    RANKER_DATA_DIR=../shared/data python benchmarks/profile_train.py \
        --config benchmarks/configs/baseline-c-frappe.yaml [--epochs 3] [--threads 2]

Trains a few epochs with the real Trainer (its per-phase timers), then profiles 30 steps with
torch.profiler. Writes benchmarks/results/profile-<name>.txt.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ranker.config import load_config
from ranker.models import build_model
from ranker.ranking.run import encode, prepare_run_data
from ranker.train import Trainer, multitask_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(
        args.config, [f"train.epochs={args.epochs}", "train.patience=100", "train.progress=false", *args.overrides]
    )
    prep = prepare_run_data(cfg)
    train, valid = encode(prep, "train"), encode(prep, "valid")
    torch.manual_seed(0)
    model = build_model(cfg.model, prep.pre.layout())
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, cfg.train, prep.data.tasks, Path(tmp))
        result = trainer.fit(train, valid)
    lines = [
        f"# {cfg.name}: {len(train):,} train rows, batch {cfg.train.batch_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters",
        f"# machine: {platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"date {time.strftime('%Y-%m-%d')}",
        "",
    ]
    lines.append("epoch  samples/s  epoch_s  data_s  forward_s  backward_s  optimizer_s  (eval excluded)")
    for h in result.history:
        t = h["time_split_s"]
        lines.append(
            f"{h['epoch']:>5}  {h['samples_per_s']:>9,.0f}  {h['epoch_time_s']:>7.2f}  "
            f"{t['data']:>6.2f}  {t['forward']:>9.2f}  {t['backward']:>10.2f}  {t['optimizer']:>11.2f}"
        )
    last = result.history[-1]["time_split_s"]
    total = sum(last.values())
    lines.append("share of the last epoch: " + ", ".join(f"{k} {v / total:.0%}" for k, v in last.items()))

    weights = torch.ones(len(prep.data.tasks))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = train.batches(cfg.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step, batch in enumerate(batches):
            if step == 30:
                break
            loss = multitask_loss(model(batch), batch["labels"], batch["label_mask"], weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    lines += [
        "",
        "torch.profiler, 30 training steps, top ops by self CPU time:",
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
    ]
    text = "\n".join(lines)
    out = Path(__file__).parent / "results" / f"profile-{cfg.name}.txt"
    out.write_text(text)
    print(text)
    print(json.dumps({"mean_samples_per_s": result.train_samples_per_s}))


if __name__ == "__main__":
    main()
