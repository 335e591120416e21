"""Latent capture for the autoencoder demo: one named block output per saved step, labels beside it."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="mxnet is not installed in this venv (only in the all-frameworks venv)")

import tensortap as tt  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402


class AutoEncoder(gluon.HybridBlock):
    def __init__(self):
        super().__init__(prefix="ae_")
        with self.name_scope():
            self.encoder = nn.HybridSequential(prefix="encoder_")
            with self.encoder.name_scope():  # Gluon names blocks by the scope they are created in
                self.encoder.add(nn.Dense(16, activation="relu", in_units=64), nn.Dense(2, in_units=16))
            self.decoder = nn.HybridSequential(prefix="decoder_")
            with self.decoder.name_scope():
                self.decoder.add(nn.Dense(16, activation="relu", in_units=2), nn.Dense(64, in_units=16))

    def hybrid_forward(self, F, x):
        z = self.encoder(x)
        return self.decoder(z), z


def test_latent_block_output_with_labels(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)
    y_all = digits.target
    mx.random.seed(0)
    model = AutoEncoder()
    model.initialize(mx.init.Xavier())
    model.hybridize()
    latent = tt.Collection("latent", include_regex=["encoder_dense1"], categories=["outputs"])
    hook = tt.Hook(str(tmp_path / "run"), include_collections=[latent, "losses"],
                   save_config=tt.SaveConfig(save_interval=5))
    hook.register(model)
    l2 = gluon.loss.L2Loss()
    hook.register_loss(l2)
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": 0.01})
    zs = {}
    for step in range(20):
        idx = slice(step * 32, (step + 1) * 32)
        x, y = mx.nd.array(x_all[idx]), y_all[idx]
        with autograd.record():
            recon, z = model(x)
            loss = l2(recon, x).mean()
        hook.save_tensor("labels", y, collections=["labels"])  # after the forward: same step as the latent
        loss.backward()
        trainer.step(1)
        zs[step] = (z.asnumpy(), y)
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.tensor_names(collection="latent") == ["ae_encoder_dense1/output_0"]  # the output only: no weights
    assert trial.steps() == [0, 5, 10, 15]
    for s in trial.steps():
        z = trial.tensor("ae_encoder_dense1/output_0").value(s)
        assert np.array_equal(z, zs[s][0]) and z.shape == (32, 2)
        assert np.array_equal(trial.tensor("labels").value(s), zs[s][1])
    assert trial.tensor("loss").value(15) < trial.tensor("loss").value(0)
