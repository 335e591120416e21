"""`python pl_ddp_script.py OUT`: Lightning strategy="ddp" on CPU with 2 processes (Lightning starts
the second one by running this script again), each rank writing its own worker through LightningCallback."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap_torch.integrations import LightningCallback  # noqa: E402

from pl_setup import Net, loader, trainer  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    hook = tt.Hook(sys.argv[1], include_collections=["gradients", "losses"], save_config=tt.SaveConfig(save_interval=1))
    tr = trainer([LightningCallback(hook)], strategy="ddp", devices=2, max_steps=3, val_check_interval=3,
                 limit_val_batches=1, num_sanity_val_steps=1)
    tr.fit(Net(lr=0.1), loader(48, 1), loader(8, 2))
    hook.close()


if __name__ == "__main__":
    main()
