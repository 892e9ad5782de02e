"""The early config check derives from the components' own signatures (read from source, without torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aelab.config.checks import config_problems
from aelab.config.signatures import signature
from aelab.store.record import RunRecord


def problems(make_cfg, *overrides):
    return config_problems(make_cfg(*overrides))[0]


def test_signatures_come_from_source_without_importing_torch():
    code = (
        "import sys; from aelab.config.signatures import signature; "
        "s = signature('aelab.models.VAE'); t = signature('lightning.pytorch.Trainer'); a = "
        "signature('torch.optim.Adam'); "
        "print(sorted(s.params)[:3], 'precision' in t.params, 'lr' in a.params, 'torch' in sys.modules, 'lightning' "
        "in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['beta', 'bottleneck', 'decoder'] True True False False"


def test_types_ranges_choices_and_inherited_options_are_read():
    vae = signature("aelab.models.VAE")
    assert vae.params["likelihood"].type.values == ("bernoulli", "gaussian")
    assert vae.params["bottleneck"].type.ranges[0].what == "the size of the code"
    assert vae.attrs["features"] == ("elbo", "prior", "iwae")
    sprites = signature("aelab.data.Sprites")  # its own options and, through **kwargs, the DataModule's
    assert {"image_size", "num_train", "batch_size", "normal_class"} <= set(sprites.params)
    assert sprites.is_subclass_of("aelab.data.ImageDataModule") and not vae.is_subclass_of("aelab.models.Autoencoder")
    precision = signature("lightning.pytorch.Trainer").params["precision"].type  # Lightning's own Literal aliases
    assert "bf16-mixed" in [v for a in precision.args for v in a.values]


def test_every_valid_trainer_argument_is_accepted(make_cfg):
    assert (
        problems(make_cfg, "+trainer.max_time=00:00:01:00", "+trainer.profiler=simple", "+trainer.min_epochs=1") == []
    )
    found = problems(make_cfg, "+trainer.max_epoch=3")
    assert found and found[0].startswith(
        "trainer.max_epoch is not an option of trainer; did you mean trainer.max_epochs?"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("+seeed=3", "seeed is not a top-level option of aelab-train; did you mean seed?"),
        (
            "+model.optimizer.learning_rate=0.1",
            "model.optimizer.learning_rate is not an option of model.optimizer (torch.optim.Adam takes: params, lr,",
        ),
        ("model.encoder.channels=[0]", "every entry of model.encoder.channels must be a positive integer (got [0])"),
        ("+model.bottelneck=8", "model.bottelneck is not an option of model; did you mean model.bottleneck?"),
        (
            "+callbacks.overfitting_gap.max_sample=3",
            "callbacks.overfitting_gap.max_sample is not an option of callbacks.overfitting_gap; did you mean",
        ),
        ("eval=[nll]", "eval.nll needs a model with 'iwae' (a VAE)"),
        ("eval=[anomaly]", "eval.anomaly needs a one-class run"),
        ("+eval.foo=1", "eval.foo is not an evaluation task"),
        ("model.sparse=null", None),
    ],
)
def test_misspelt_and_out_of_range_keys_at_any_depth(make_cfg, override, message):
    found = problems(make_cfg, "model=conv", override)
    if message is None:
        assert found == []
    else:
        assert any(message in p for p in found), found


def test_penalties_are_components_checked_by_their_signature(make_cfg):
    found = problems(make_cfg, "model=sparse", "model.sparse.kind=l2", "model.sparse.target=1.5")
    assert "model.sparse.kind='l2' is not one of ['l1', 'kl']" in found
    assert "model.sparse.target is a mean activation and must be > 0 and < 1 (got 1.5)" in found


def test_run_record_merges_evaluations_and_writes_atomically(tmp_path):
    record = RunRecord(tmp_path, {"status": "completed", "final": {"test/recon_loss": 0.1}})
    record.add_evaluation({"eval/auroc": 0.9, "eval/anomaly_normal_class": 1}, {"anomaly": {"n": 3}}, {}, "best.ckpt")
    record.save()
    again = RunRecord.read(tmp_path)
    assert again.final == {"test/recon_loss": 0.1, "eval/auroc": 0.9, "eval/anomaly_normal_class": 1}
    assert again.data["eval"]["details"]["anomaly"] == {"n": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 != 0o600  # the umask's permissions, not tempfile's
    (tmp_path / "metrics.json").write_text('{"status": "comp')
    assert RunRecord.read_with_problem(tmp_path) == (
        None,
        "metrics.json is not valid JSON (half-written by another tool?)",
    )
    RunRecord(tmp_path, {"status": "failed", "final": {"val/recon_loss": float("nan")}}).save()
    assert json.loads((tmp_path / "metrics.json").read_text())["final"] == {"val/recon_loss": None}  # valid JSON


def test_the_signature_cache_never_serves_one_checkout_to_another(tmp_path):
    """Two checkouts of one package (a fresh clone beside the working copy) share ~/.cache/aelab: each reads its own."""
    import subprocess
    import sys

    for name, option in (("a", "alpha"), ("b", "beta")):
        pkg = tmp_path / name / "sigpkg"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"class Thing:\n    def __init__(self, {option}: int = 1):\n        pass\n")
    probe = "from aelab.config.signatures import signature; print(sorted(signature('sigpkg.Thing').params))"
    env = {"AELAB_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    seen = [
        subprocess.run(
            [sys.executable, "-c", probe],
            env={**env, "PYTHONPATH": str(tmp_path / name)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for name in ("a", "b", "a")
    ]
    assert seen == ["['alpha']", "['beta']", "['alpha']"]
    assert (tmp_path / "cache").is_dir()  # the cache was written (and read on the third call)


def test_an_optimizers_own_argument_checks_are_read_from_its_source(make_cfg):
    """``model.optimizer.lr=-1`` is refused by the early check, in the words the pre-run step's build of the optimizer
    uses (torch's own message), without importing torch: read from ``torch.optim.Adam.__init__``'s first checks."""
    assert ("not (not 0.0 <= lr)", "Invalid learning rate: {lr}") in signature("torch.optim.Adam").guards
    lr = "model.optimizer (lr=-1, weight_decay=0.0) cannot be built: Invalid learning rate: -1"
    assert problems(make_cfg, "model.optimizer.lr=-1") == [lr]
    assert problems(make_cfg, "model.optimizer.lr=-1", "model.optimizer.weight_decay=-2") == [  # torch's first only
        "model.optimizer (lr=-1, weight_decay=-2) cannot be built: Invalid learning rate: -1"
    ]
    assert problems(make_cfg, "+model.optimizer.betas=[0.9,1.5]") == [
        "model.optimizer (lr=0.001, weight_decay=0.0, betas=[0.9, 1.5]) cannot be built: "
        "Invalid beta parameter at index 1: 1.5"
    ]
    assert problems(make_cfg, "model.optimizer._target_=torch.optim.SGD", "+model.optimizer.momentum=-0.5") == [
        "model.optimizer (lr=0.001, weight_decay=0.0, momentum=-0.5) cannot be built: Invalid momentum value: -0.5"
    ]
    plateau = "{_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true, factor: 2.0}"
    assert problems(make_cfg, f"model.scheduler={plateau}") == [
        "model.scheduler (factor=2.0) cannot be built: Factor should be < 1.0."
    ]
    assert problems(make_cfg, "model.optimizer.lr=0.5", "+model.optimizer.betas=[0.5,0.99]") == []


def test_only_a_constructors_first_checks_of_its_arguments_are_read(tmp_path, monkeypatch):
    """A check after a statement that may change an argument, or over anything but the arguments, is left to the
    constructor: reading it could refuse what the constructor accepts."""
    (tmp_path / "guardpkg_startup.py").write_text(
        "class Thing:\n"
        "    def __init__(self, a=1, b=(0, 1), c=1, d=1):\n"
        '        """Doc."""\n'
        "        if isinstance(a, str):\n"
        '            raise TypeError("a string")\n'
        "        if a < 0 or b[1] > 5:\n"
        '            raise ValueError(f"bad a={a} or b={b[1]} {{literal}}")\n'
        "        if self.limit < c:\n"
        '            raise ValueError("not read: self")\n'
        "        if len(str(c)) > 3:\n"
        '            raise ValueError("not read: a call")\n'
        "        d = abs(d)\n"
        "        if d < 0:\n"
        '            raise ValueError("not read: after d changed")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert signature("guardpkg_startup.Thing").guards == [
        ("not (a < 0 or b[1] > 5)", "bad a={a} or b={b[1]} {{literal}}")
    ]
