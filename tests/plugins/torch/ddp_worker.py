"""One rank of a 2-process DDP (gloo, CPU) run for test_torch_distributed.py.

usage: python ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR
"""
import sys

import torch
import torch.distributed as dist
from torch import nn

import tensortap as tt


def main() -> None:
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ddp = nn.parallel.DistributedDataParallel(model)
    hook = tt.Hook(out_dir, include_collections=["weights", "gradients", "inputs", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(3):
        x, y = torch.randn(6, 4, generator=g), torch.randint(0, 2, (6,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        hook.record_loss(loss)
        loss.backward()
        opt.step()
    hook.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
