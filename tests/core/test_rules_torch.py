"""Built-in rules on small torch models that really train, saved through the Hook by hand
(begin_step / save_tensor / record_loss), so they need no framework plugin."""
from __future__ import annotations

import time
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed in this venv")

import tensortap as tt  # noqa: E402
from tt_rules_helpers import assert_quiet, evaluate, first_fired, torch_run  # noqa: E402

nn = torch.nn
R = tt.rules.get
torch.set_num_threads(1)


def blobs(n=256, d=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 2
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def mlp(act, depth, width=32, d=16, k=4, init=None, seed=0):
    torch.manual_seed(seed)
    layers = OrderedDict()
    prev = d
    for i in range(depth):
        layers[f"fc{i}"] = nn.Linear(prev, width)
        layers[f"{act.__name__.lower()}{i}"] = act()
        prev = width
    layers["out"] = nn.Linear(prev, k)
    model = nn.Sequential(layers)
    if init is not None:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    init(m)
    return model


def test_vanishing_gradient_deep_sigmoid_tiny_init(run_dir, tmp_path):
    def tiny(m):
        nn.init.normal_(m.weight, std=0.01)
        nn.init.zeros_(m.bias)
    torch_run(run_dir, mlp(nn.Sigmoid, 8, init=tiny), blobs(), steps=5)
    res = evaluate(R("vanishing_gradient")(), run_dir)
    assert first_fired(res) == 0
    fired = res[0]
    assert "gradients/fc0.weight" in fired.values["mean_abs"]
    assert fired.values["mean_abs"]["gradients/fc0.weight"] < 1e-7
    healthy = str(tmp_path / "healthy")
    losses = torch_run(healthy, mlp(nn.ReLU, 3), blobs(), steps=15)
    assert losses[-1] < losses[0]
    assert_quiet(evaluate(R("vanishing_gradient")(), healthy))


def test_poor_weight_initialization_unit_variance_init(run_dir, tmp_path):
    def big(m):
        nn.init.normal_(m.weight, std=1.0)
    layers = [f"relu{i}" for i in range(4)]
    torch_run(run_dir, mlp(nn.ReLU, 4, width=64, init=big), blobs(), steps=12, lr=1e-4, layers=layers)
    res = evaluate(R("poor_weight_initialization")(), run_dir)
    assert first_fired(res) == 0
    assert res[0].values["activation_variance_ratio"] > 10
    assert all(r.skipped for r in res if r.step >= 10)  # only the first `steps` steps are checked
    healthy = str(tmp_path / "healthy")

    def kaiming(m):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    torch_run(healthy, mlp(nn.ReLU, 4, width=64, init=kaiming), blobs(), steps=12, lr=0.05, layers=layers)
    assert_quiet(evaluate(R("poor_weight_initialization")(), healthy))


def test_saturated_activation_tanh_large_weights(run_dir, tmp_path):
    def huge(m):  # pre-activations ~ +30: far beyond tanh's 9.5 where it is flat in float32
        nn.init.normal_(m.weight, std=0.05)
        nn.init.constant_(m.bias, 30.0)
    torch_run(run_dir, mlp(nn.Tanh, 2, init=huge), blobs(), steps=4, layers=["tanh0", "tanh1"])
    res = evaluate(R("saturated_activation")(), run_dir)
    assert first_fired(res) == 0 and "tanh1/input_0" in res[0].message
    healthy = str(tmp_path / "healthy")
    torch_run(healthy, mlp(nn.Tanh, 2), blobs(), steps=8, layers=["tanh0", "tanh1"])
    assert_quiet(evaluate(R("saturated_activation")(), healthy))


def _digits(normalise: bool):
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)  # (n, 1, 8, 8), pixels 0..16
    if normalise:
        x = (x - x.mean()) / x.std()
    return x, torch.tensor(d.target)


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 8, 3, padding=1), relu1=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(), fc=nn.Linear(32, 10)))


def test_check_input_images_unnormalised_digits(run_dir, tmp_path):
    torch_run(run_dir, cnn(), _digits(False), steps=12, batch=64, lr=0.01, layers=["conv1", "relu1"])
    res = evaluate(R("check_input_images")(), run_dir)
    assert first_fired(res) == 7  # 8 batches of 64 = 512 >= 500 images
    assert "conv1/input_0" in [r for r in res if r.fired][0].message  # relu1's 8-channel input is no image
    healthy = str(tmp_path / "healthy")
    torch_run(healthy, cnn(), _digits(True), steps=12, batch=64, lr=0.05, layers=["conv1", "relu1"])
    assert_quiet(evaluate(R("check_input_images")(), healthy))


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, 8, padding_idx=0)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids):
        return self.fc(self.embedding(ids).mean(1))


def sequences(n=128, length=40, real=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    lens = torch.randint(max(1, real - 5), real + 1, (n,), generator=g)
    for i in range(n):
        ids[i, :lens[i]] = torch.randint(1, 50, (int(lens[i]),), generator=g)
    return ids, (ids[:, 0] % 2)


def test_nlp_sequence_ratio_mostly_padding(run_dir, tmp_path):
    torch_run(run_dir, BagOfWords(), sequences(real=10), steps=4, layers=["embedding"])
    res = evaluate(R("nlp_sequence_ratio")(), run_dir)
    assert first_fired(res) == 0 and "token 0" in res[0].message
    assert res[0].values["percent"]["embedding/input_0[0]"] > 70
    healthy = str(tmp_path / "healthy")
    torch_run(healthy, BagOfWords(), sequences(real=36), steps=4, layers=["embedding"])
    assert_quiet(evaluate(R("nlp_sequence_ratio")(), healthy))
    # several tokens with their own thresholds
    rule = R("nlp_sequence_ratio")(token_values="0,7", token_thresholds_percent="90,1")
    assert first_fired(evaluate(rule, healthy)) == 0


def test_with_the_torch_plugin_dead_relu_stops_training_live(run_dir):
    """End to end with tensortap-torch capturing: names come from the plugin, the stop from its adapter."""
    pytest.importorskip("tensortap_torch", reason="pip install -e plugins/tensortap-torch")
    model = mlp(nn.ReLU, 2)
    with torch.no_grad():
        model.fc1.bias.fill_(-50.0)  # the second ReLU layer dies
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "outputs", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(R("dead_relu")(), action="stop_training")
    hook.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = blobs()
    steps = 0
    with pytest.raises(tt.StopTraining, match="dead_relu fired at step"):
        for _ in range(200):
            loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            time.sleep(0.005)
    hook.close()
    assert 1 <= steps < 50
    fired = [r for r in tt.create_trial(run_dir).rule_results() if r["fired"]]
    assert fired[0]["step"] == 0 and "relu1/output_0" in fired[0]["message"]
    assert "relu0/output_0" not in fired[0]["message"]
