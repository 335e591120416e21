"""The Grad-CAM demo's model trained by Lightning, with tensortap's LightningCallback driving the hook.

The probe images are the validation set: every `probe_every` training batches Lightning validates
them, an EVAL step at which the torch plugin's "feature_maps" collection records their Grad-CAM
(the model as that step finds it, in eval mode, BatchNorm statistics and gradients untouched).
Lightning's sanity check runs the same validation first: it counts no step and saves nothing.
"""
from __future__ import annotations

import warnings
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import tensortap as tt


def train_lightning(model: torch.nn.Module, hook: tt.Hook, data: tuple, cfg: dict,
                    seed: int) -> Tuple[List[float], List[float], str]:
    """Train `model` with lightning.Trainer + LightningCallback(hook); returns (training losses,
    held-out accuracy per epoch, the explained layer's module name in the LightningModule)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from tensortap_torch.integrations import LightningCallback

    xtr_t, ytr_t, xte_t, yte_t, probe = data
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")

    class Signs(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.losses: List[float] = []
            self.accs: List[float] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            self.losses.append(float(loss.detach()))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            # grad mode on (Lightning validates under no_grad; Trainer(inference_mode=False) allows turning
            # it back on): the plugin's Grad-CAM (tensortap-torch 0.1) needs it for the class-score gradient
            with torch.enable_grad():
                p = F.softmax(self(x), 1).detach()
            self.log("probe_confidence", p[torch.arange(len(y)), y].mean())

        def on_train_epoch_end(self) -> None:
            self.eval()
            with torch.no_grad():
                acc = float((self(xte_t).argmax(1) == yte_t).float().mean())
            self.train()
            self.accs.append(acc)
            self.log("held_out_accuracy", acc)
            print(f"epoch {self.current_epoch}: loss {np.mean(self.losses[-10:]):.3f}, held-out accuracy {acc:.3f}")

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    module = Signs()
    train = DataLoader(TensorDataset(xtr_t, ytr_t), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    probes = DataLoader(TensorDataset(xte_t[probe], yte_t[probe]), batch_size=len(probe))
    trainer = L.Trainer(max_epochs=cfg["epochs"], val_check_interval=cfg["probe_every"], check_val_every_n_epoch=None,
                        num_sanity_val_steps=1, inference_mode=False, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[LightningCallback(hook)])
    trainer.validate(module, probes, verbose=False)   # the probe pass before training
    trainer.fit(module, train, probes)
    trainer.validate(module, probes, verbose=False)   # and after it
    hook.close()
    return module.losses, module.accs, "net.layer3"
