"""A run folder you can trust (issue 25, parts 1, 2 and 4): the probes, each asserting the new behaviour.

Shared run folders are data, not code: a checkpoint whose pickle runs a command and a config whose ``_target_``s
call functions are refused — through aelab-eval, -predict, -export, aelab.load_run, aelab-compare's grid and
aelab-train's ckpt_path=/resume= — with one line naming the file or key; the payloads write a marker file that must
not exist afterwards. Then the smaller faults: export descriptions per format, out= that cannot be written, symbolic
link loops, predict's advice on corrupt images, tiny folders, garbage metrics.json and config.yaml, a stopped
aelab-eval or aelab-predict, an anomaly folder without ground_truth/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BIN, TINY, compose_config, train_run_folder
from omegaconf import OmegaConf

from aelab.errors import ConfigError, DataFileError, DatasetNotFoundError, TrustError

QUICK = [*TINY, "model=conv", "model.bottleneck=8", "trainer.limit_train_batches=4"]


class _Command:
    """Pickles as a call of ``os.system(command)``: what a malicious checkpoint holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny trained run folder, the template every probe copies."""
    root = tmp_path_factory.mktemp("trust")
    return train_run_folder(root / "run", QUICK)


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".aelab.lock"))
    return dst


def poison_checkpoints(run_dir: Path, marker: Path) -> None:
    """Every checkpoint of ``run_dir`` keeps its weights and gains an object whose unpickling touches ``marker``."""
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"]["note"] = _Command(f"touch {marker}")
        torch.save(state, ckpt)


def edit_config(run_dir: Path, edit) -> Path:
    path = run_dir / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(path)
    edit(cfg)
    OmegaConf.save(cfg, path)
    return run_dir


def config_payloads(run: Path, root: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """The config probes of the issue: run folder → (key, target) the refusal must name. Each would touch
    ``marker`` if instantiated."""
    root.mkdir(parents=True, exist_ok=True)
    copy = {"_target_": "shutil.copyfile", "src": str(run / "metrics.json"), "dst": str(marker)}
    out: dict[str, tuple[Path, str]] = {}

    folder = copy_run(run, root / "torch_load")
    torch.save({"x": _Command(f"touch {marker}")}, folder / "extra.pt")  # shipped inside the folder

    def torch_load(cfg):
        cfg.model.optimizer = {"_target_": "torch.load", "f": str(folder / "extra.pt"), "weights_only": False}

    out["torch_load"] = (edit_config(folder, torch_load), "model.optimizer._target_=torch.load")

    def load_checkpoint(cfg):
        cfg.model.encoder = {"_target_": "aelab.store.checkpoints.load_checkpoint", "path": str(folder / "extra.pt")}

    folder2 = edit_config(copy_run(run, root / "aelab_function"), load_checkpoint)
    out["aelab_function"] = (folder2, "model.encoder._target_=aelab.store.checkpoints.load_checkpoint")
    out["copyfile"] = (
        edit_config(copy_run(run, root / "copyfile"), lambda cfg: cfg.update({"noise": copy})),
        "noise._target_=shutil.copyfile",
    )

    def wrapped(cfg):  # len() of a list whose first item copies a file: bottleneck 8, the run would still work
        cfg.model.bottleneck = {"_target_": "builtins.len", "_args_": [[copy, *range(7)]]}

    out["len"] = (edit_config(copy_run(run, root / "len"), wrapped), "model.bottleneck._target_=builtins.len")
    return out


# ------------------------------------------------------------------ 1. checkpoints load weights only
def test_a_checkpoint_that_runs_code_is_refused_by_load_run_naming_the_file_the_type_and_the_flag(run, tmp_path):
    from aelab.run.load import load_run

    marker = tmp_path / "ran"
    folder = copy_run(run, tmp_path / "shared")
    poison_checkpoints(folder, marker)
    with pytest.raises(TrustError) as refused:
        load_run(folder)
    message = str(refused.value)
    assert "\n" not in message and "best-epoch=" in message and "system" in message, message
    assert "trust_checkpoint=true" in message
    assert not marker.exists()
    loaded = load_run(folder, trust_checkpoint=True)  # the opt-in loads it with full pickle: the payload is live
    assert marker.exists() and loaded.model is not None


def test_the_weights_only_load_keeps_the_checkpoints_aelab_writes_and_the_types_lightning_may_add(run, tmp_path):
    import argparse
    import pathlib

    from aelab.store.checkpoints import AtomicCheckpointIO, load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.ckpt")  # optimizer, loops, callbacks: all plain
    assert {"state_dict", "optimizer_states", "loops", "callbacks"} <= set(state)
    state["extra"] = {"dir": pathlib.Path("/x"), "hparams": argparse.Namespace(a=1), "score": np.float64(0.5)}
    torch.save(state, tmp_path / "more.ckpt")
    again = AtomicCheckpointIO().load_checkpoint(tmp_path / "more.ckpt")  # Lightning's own load during fit/test
    assert again["extra"]["dir"] == pathlib.Path("/x") and again["extra"]["score"] == 0.5
    state["extra"] = _Command(f"touch {tmp_path / 'ran'}")
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(TrustError, match="bad.ckpt was refused: it holds posix.system"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "ran").exists()
    AtomicCheckpointIO(trust=True).load_checkpoint(tmp_path / "bad.ckpt")
    assert (tmp_path / "ran").exists()


def test_ckpt_path_and_resume_refuse_a_checkpoint_that_runs_code_before_training(run, tmp_path):
    from aelab.run.job import run_job

    marker = tmp_path / "ran"
    shared = copy_run(run, tmp_path / "shared")
    poison_checkpoints(shared, marker)
    cfg = compose_config(tmp_path / "new", [*QUICK, f"ckpt_path={shared / 'checkpoints' / 'last.ckpt'}"])
    with pytest.raises(TrustError, match=r"last.ckpt was refused.*trust_checkpoint=true"):
        run_job(cfg, cli=False)
    # an interrupted run folder whose last.ckpt was replaced: continuing it (resume=auto) refuses the file too
    record = json.loads((shared / "metrics.json").read_text())
    (shared / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    before = (shared / "checkpoints" / "last.ckpt").read_bytes()
    cfg = compose_config(shared, [*QUICK, "trainer.max_epochs=2"])
    with pytest.raises(TrustError, match=r"last.ckpt was refused"):
        run_job(cfg, cli=False)
    assert not marker.exists()
    assert (shared / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing written over it


def test_trust_checkpoint_true_lets_aelab_train_start_from_a_checkpoint_it_refused(run, tmp_path):
    from aelab.run.job import run_job

    marker = tmp_path / "ran"
    shared = copy_run(run, tmp_path / "shared")
    poison_checkpoints(shared, marker)
    ckpt = shared / "checkpoints" / "last.ckpt"
    run_job(compose_config(tmp_path / "new", [*QUICK, f"ckpt_path={ckpt}", "trust_checkpoint=true"]), cli=False)
    assert marker.exists()  # loaded with full pickle, as the flag says


def test_export_as_safetensors_holds_the_parts_weights_and_keeps_the_other_formats_description(run, tmp_path):
    from safetensors import safe_open

    from aelab.deploy.export import export
    from aelab.run.load import load_run

    loaded = load_run(run)
    first = export(loaded, "torchscript", "encoder", tmp_path)
    before = (tmp_path / "encoder.torchscript.json").read_text()
    second = export(loaded, "safetensors", "encoder", tmp_path)
    assert (tmp_path / "encoder.torchscript.json").read_text() == before  # the first format's description is kept
    described = json.loads((tmp_path / "encoder.safetensors.json").read_text())
    assert described["format"] == "safetensors" and described["parity"]["max_abs_diff"] <= 1e-6
    assert first["file"].endswith("encoder.pt") and second["file"].endswith("encoder.safetensors")
    with safe_open(second["file"], framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("encoder.") for k in keys)  # the encoder's weights, not the decoder's
    assert "bottleneck: 8" in meta["model_config"] and meta["part"] == "encoder"


# ------------------------------------------------------------------ 2. a run folder's config is data
def test_config_payloads_are_refused_by_load_run_naming_the_key_and_the_target(run, tmp_path):
    from aelab.run.load import load_run

    marker = tmp_path / "ran"
    for name, (folder, named) in config_payloads(run, tmp_path / "probes", marker).items():
        with pytest.raises(TrustError) as refused:
            load_run(folder)
        message = str(refused.value)
        assert named in message and str(folder / ".hydra" / "config.yaml") in message, (name, message)
        assert "\n" not in message
    assert not marker.exists()
    # the payloads are live: trusting the packages explicitly runs them
    folder, _ = config_payloads(run, tmp_path / "again", marker)["copyfile"]
    with contextlib.suppress(Exception):  # the copy runs; what it returns is no corruption, so loading may fail
        load_run(folder, trust_packages=["shutil"])
    assert marker.exists()


@pytest.mark.slow  # four tools as subprocesses, about 25 s
def test_config_payloads_are_refused_by_eval_predict_export_and_compares_grid(run, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from aelab import config_dir
    from aelab.analysis.compare import compare
    from aelab.cli.evaluate import evaluate_main
    from aelab.cli.export import export_main
    from aelab.cli.predict import predict_main

    marker = tmp_path / "ran"
    probes = config_payloads(run, tmp_path / "probes", marker)
    ckpt = copy_run(run, tmp_path / "probes" / "checkpoint")
    poison_checkpoints(ckpt, marker)

    def cfg(name: str, *overrides: str):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))

    capsys.readouterr()
    assert evaluate_main(cfg("evaluate", f"run={tmp_path / 'probes'}", "eval=[denoise]")) == 1  # all five, one call
    said = capsys.readouterr().err
    for folder, named in probes.values():
        assert f"{folder}: error: {named} in " in said, said
    assert f"{ckpt}: error: checkpoint {ckpt}/checkpoints/" in said and "trust_checkpoint=true" in said
    for folder, named in [*probes.values(), (ckpt, "trust_checkpoint=true")]:
        assert predict_main(cfg("predict", f"run={folder}", "input=sprites")) == 2
        assert export_main(cfg("export", f"run={folder}", "format=safetensors")) == 2
        said = capsys.readouterr().err.splitlines()
        assert len(said) == 2 and all(named in line for line in said), said
        result = compare([folder], tmp_path / "cmp" / folder.name, grid_images=4, curves=0)
        assert result.table.frame["status"].tolist() == ["completed"]  # the record is read; only the grid is refused
        assert named in (result.out_dir / "report.md").read_text()
    assert not marker.exists()
    assert not any(p.name == "predict" or p.name == "export" for f in tmp_path.glob("probes/*") for p in f.iterdir())


def test_the_allowlist_takes_component_classes_of_the_runs_search_path_packages_and_trusted_ones(monkeypatch):
    from aelab.config.trust import (
        TRUST_ENV,
        check_config_targets,
        search_path_packages,
        target_problem,
        trusted_packages,
    )

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "extension"))  # tests/extension/mylab
    monkeypatch.delenv(TRUST_ENV, raising=False)
    assert search_path_packages(["pkg://mylab.conf", "file:///home/me/conf", "pkg://mylab.more"]) == ["mylab"]
    assert target_problem("mylab.toy_model.CodeL2Autoencoder", ["mylab"]) is None  # a recorded search path
    assert target_problem("torch.optim.lr_scheduler.StepLR") is None and target_problem("aelab.models.VAE") is None
    assert "outside the allowlist" in target_problem("mylab.toy_model.CodeL2Autoencoder")
    # a recorded search path is data too: naming pkg://torch or pkg://shutil there admits no functions
    assert "not a component class" in target_problem("torch.load", ["torch"])
    assert "not a component class" in target_problem("shutil.copyfile", ["shutil"])
    assert "not a component class" in target_problem("aelab.data.folder.find_images")
    target = "mylab.toy_eval.CodeStatsTask"  # outside the allowlist unless the package is on the search path or trusted
    cfg = OmegaConf.create({"model": {"_target_": "aelab.models.Autoencoder", "net": [{"_target_": target}]}})
    with pytest.raises(TrustError, match=r"model\.net\[0\]\._target_=mylab\.toy_eval\.CodeStatsTask .*trust_packages"):
        check_config_targets(cfg)
    monkeypatch.setenv(TRUST_ENV, "otherlab,mylab")
    check_config_targets(cfg, trusted=trusted_packages(["unused"]))  # trusted explicitly: anything defined under it


def test_a_trusted_name_that_reaches_another_packages_object_is_refused(monkeypatch, tmp_path):
    """Hydra's ``_locate`` follows attributes: ``mylab.toy_data.torch.load`` is ``torch.load``, and trusting mylab
    does not trust torch (issue 34: a payload checkpoint loaded with ``weights_only: false`` through it)."""
    from aelab.config.trust import check_config_targets, target_problem

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "extension"))
    assert "resolves to torch.serialization.load" in target_problem("mylab.toy_data.torch.load", trusted=["mylab"])
    assert "resolves to" in target_problem("mylab.toy_data.torch", trusted=["mylab"])  # a module is its own name
    assert "resolves to" in target_problem("aelab.models.base.torch.nn.Linear")  # allowed by class, not by path
    assert "resolves to" in target_problem("mylab.toy_model.Autoencoder", ["mylab"])  # aelab's, reached via mylab
    marker = tmp_path / "ran"
    payload = {"_target_": "mylab.toy_data.torch.load", "f": str(marker), "weights_only": False}
    cfg = OmegaConf.create({"noise": payload})
    with pytest.raises(TrustError, match=r"noise\._target_=mylab\.toy_data\.torch\.load .*resolves to torch"):
        check_config_targets(cfg, trusted=["mylab"])
    assert not marker.exists()


def test_the_runs_recorded_search_path_is_read_from_its_hydra_yaml(run, tmp_path, monkeypatch):
    from aelab.errors import RunFolderError
    from aelab.run.load import check_run_config
    from aelab.store.runs import load_run_config, run_search_path

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "extension"))  # tests/extension/mylab
    folder = copy_run(run, tmp_path / "ext")
    edit_config(folder, lambda cfg: cfg.model.update({"_target_": "mylab.toy_model.CodeL2Autoencoder"}))
    assert run_search_path(folder) == []
    with pytest.raises(TrustError, match="mylab.toy_model.CodeL2Autoencoder .* trust_packages=\\[mylab\\]"):
        check_run_config(load_run_config(folder), folder)
    hydra = OmegaConf.load(folder / ".hydra" / "hydra.yaml")
    hydra.hydra.searchpath = ["pkg://mylab.conf"]
    OmegaConf.save(hydra, folder / ".hydra" / "hydra.yaml")
    assert run_search_path(folder) == ["pkg://mylab.conf"]
    check_run_config(load_run_config(folder), folder)  # the run's own extension package: no flag needed
    (folder / ".hydra" / "hydra.yaml").write_text("hydra: [unclosed\n")
    with pytest.raises(RunFolderError, match="hydra.yaml is not valid YAML"):
        run_search_path(folder)


# ------------------------------------------------------------------ 4. the smaller faults
def test_out_that_is_a_file_or_cannot_be_written_is_one_line_before_anything_is_written(run, tmp_path):
    from aelab.deploy.export import export
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    loaded = load_run(run)
    (tmp_path / "a_file").write_text("kept")
    for out, said in [(tmp_path / "a_file", "is a file"), (tmp_path / "a_file" / "sub", "is a file")]:
        with pytest.raises(ConfigError, match=f"out={out} {said}"):
            predict(loaded, "sprites", out, progress=False)
        with pytest.raises(ConfigError, match=f"out={out} {said}"):
            export(loaded, "safetensors", "encoder", out)
    assert (tmp_path / "a_file").read_text() == "kept"
    unwritable = Path("/sys/aelab-probe")  # sysfs: refused even to root (a chmod'ed folder is not, as root)
    for call in (
        lambda: predict(loaded, "sprites", unwritable, progress=False),
        lambda: export(loaded, "onnx", "encoder", unwritable),
    ):
        with pytest.raises(ConfigError, match=f"out={unwritable} cannot be written"):
            call()


def test_a_symbolic_link_loop_under_the_images_is_named_in_training_and_predict(run, tmp_path):
    from own_data import write_image_folder

    from aelab.data.folder import ImageFolder
    from aelab.data.sprites import make_sprites
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    images, labels, _ = make_sprites(12, 28, 1, 3)
    folder = write_image_folder(tmp_path / "pngs", images.numpy(), None, fmt=("png",))
    (folder / "x").symlink_to("y")
    (folder / "y").symlink_to("x")
    for read in (
        lambda: ImageFolder(path=str(folder)).setup(),
        lambda: predict(load_run(run), str(folder), progress=False),
    ):
        with pytest.raises(DataFileError, match=f"{folder / 'x'} is a symbolic link that loops"):
            read()
    (folder / "x").unlink(), (folder / "y").unlink()
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder that contains itself
    with pytest.raises(DataFileError, match="up is a symbolic link that loops .it leads back to a folder it lies in"):
        ImageFolder(path=str(folder)).setup()


def test_predicts_corrupt_image_advice_is_what_predict_can_do(run, tmp_path):
    from own_data import write_image_folder

    from aelab.data.sprites import make_sprites
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    images, _, _ = make_sprites(6, 28, 1, 3)
    folder = write_image_folder(tmp_path / "pngs", images.numpy(), None, fmt=("png",))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ConfigError) as refused:
        predict(load_run(run), str(folder), tmp_path / "out", progress=False)
    message = str(refused.value)
    assert "broken.png" in message and f"input={folder}" in message and "skip_bad" not in message, message


def test_a_folder_of_one_image_says_it_has_too_few_images(tmp_path):
    from own_data import write_image_folder

    from aelab.data.folder import ImageFolder
    from aelab.data.sprites import make_sprites

    images, _, _ = make_sprites(1, 28, 1, 3)
    folder = write_image_folder(tmp_path / "one", images.numpy(), None, fmt=("png",))
    with pytest.raises(ConfigError) as refused:
        ImageFolder(path=str(folder)).setup()
    assert "has 0 training image(s) after the test split" in str(refused.value)
    assert "between 1 and -1" not in str(refused.value)


def test_an_anomaly_folder_without_ground_truth_is_an_error_under_require_masks(tmp_path):
    from own_data import write_mvtec_like

    from aelab.data import AnomalyFolder

    root = write_mvtec_like(tmp_path / "set", n_train=20, n_good=4, n_defect=4, masks=False)
    with pytest.raises(DatasetNotFoundError, match=f"{root} has no ground_truth/ folder.*data.require_masks=false"):
        AnomalyFolder(path=str(root)).setup()
    dm = AnomalyFolder(path=str(root), require_masks=False)  # the explicit choice: image-level scores only
    dm.setup()
    assert not dm.has_masks


def test_garbage_metrics_json_and_config_yaml_are_named_as_such(run, tmp_path):
    from aelab.analysis.compare import compare
    from aelab.evaluation.runner import evaluate_path

    garbage = copy_run(run, tmp_path / "runs" / "garbage_metrics")
    (garbage / "metrics.json").write_text('{"status": "compl')
    results = evaluate_path(garbage, None, auto={"one_class": [], "other": ["denoise"]})
    said = str(results[str(garbage)])
    assert "metrics.json is not valid JSON" in said and "no metrics.json" not in said
    damaged = copy_run(run, tmp_path / "runs" / "garbage_config")
    (damaged / ".hydra" / "config.yaml").write_text("model: [unclosed\n  - : :\n")
    copy_run(run, tmp_path / "runs" / "good")
    result = compare([tmp_path / "runs"], tmp_path / "cmp", grid_images=0, curves=0)
    problems = {Path(p["run"]).name: p for p in result.table.problems}
    assert problems["garbage_config"]["status"] == "unreadable"
    assert f"{damaged / '.hydra' / 'config.yaml'} is not valid YAML" in problems["garbage_config"]["error"]
    assert result.table.completed["run"].str.endswith("good").any()


def test_a_stopped_evaluation_keeps_the_numbers_of_the_tasks_it_finished(run, tmp_path):
    from aelab.evaluation.runner import evaluate_run
    from aelab.evaluation.task import EvalResult, EvalTask
    from aelab.run.load import load_run

    class Quick(EvalTask):
        name = "quick"

        def run(self, run, out_dir):
            return EvalResult(metrics={"eval/quick": 0.5})

    class Stopped(EvalTask):
        name = "stopped"

        def run(self, run, out_dir):
            raise KeyboardInterrupt

    folder = copy_run(run, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(load_run(folder), {"quick": Quick(), "stopped": Stopped()})
    record = json.loads((folder / "metrics.json").read_text())
    assert record["final"]["eval/quick"] == 0.5 and record["status"] == "completed"
    assert record["final"]["test/recon_loss"] > 0  # nothing recorded before is lost


def test_a_stopped_prediction_leaves_no_temporaries_and_a_rerun_removes_a_dead_ones(run, tmp_path):
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    loaded = load_run(run)
    out = tmp_path / "out"
    calls = {"n": 0}
    infer = loaded.model.infer

    def stop_on_the_second_batch(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return infer(x)

    loaded.model.infer = stop_on_the_second_batch
    with pytest.raises(KeyboardInterrupt):
        predict(loaded, "sprites", out, batch_size=50, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []  # the arrays being written are gone
    loaded.model.infer = infer
    dead = out / ".codes.tmp-999999999.npy"  # a killed (SIGKILL) prediction's: its PID is no longer running
    live = out / f".scores.tmp-{os.getppid()}.csv"  # a running one's is left alone
    dead.write_bytes(b"x"), live.write_bytes(b"x")
    predict(loaded, "sprites", out, outputs=["codes"], progress=False)
    assert not dead.exists() and live.exists() and (out / "codes.npy").is_file()


@pytest.mark.slow
def test_the_command_lines_say_one_line_and_run_nothing(run, tmp_path):
    """The real entry points on a poisoned checkpoint and a config payload: one line each, no traceback, no marker."""
    marker = tmp_path / "ran"
    ckpt = copy_run(run, tmp_path / "ckpt")
    poison_checkpoints(ckpt, marker)
    cfg, named = config_payloads(run, tmp_path / "probes", marker)["copyfile"]
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("WANDB_SERVICE", None)
    calls = []
    for folder, said in [(ckpt, "trust_checkpoint=true"), (cfg, named)]:
        calls += [
            (["aelab-eval", f"run={folder}", "eval=[denoise]"], said),
            (["aelab-predict", f"run={folder}", "input=sprites"], said),
            (["aelab-export", f"run={folder}"], said),
        ]
    calls.append((["aelab-train", *QUICK, f"ckpt_path={ckpt / 'checkpoints' / 'last.ckpt'}", "name=x"], "refused"))
    for args, said in calls:
        result = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr, (args, result)
    assert not marker.exists()


def _cifar_folder(root: Path, payload=None) -> Path:
    """A CIFAR-10 ``cifar-10-batches-py`` folder of tiny batches pickled as the format holds them (protocol 2, numpy
    arrays), one of them replaced by ``payload`` when given."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "batch_label": "training batch",
            "labels": [int(v) for v in rng.integers(0, 10, 20)],
            "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(20)],
        }
        content = payload if payload is not None and name == "data_batch_3" else entry
        (folder / name).write_bytes(pickle.dumps(content, 2))
    return folder


def test_cifar_batches_are_read_without_running_what_a_pickle_names(tmp_path):
    from aelab.data import CIFAR10

    dm = CIFAR10(root=str(tmp_path / "good"), download=False, val_size=10)
    _cifar_folder(tmp_path / "good")
    dm.setup()
    assert len(dm.splits["train"]) == 90 and dm.splits["test"].images.shape == (20, 3, 32, 32)

    marker = tmp_path / "ran"
    _cifar_folder(tmp_path / "shared", payload={"data": _Command(f"touch {marker}"), "labels": [0]})
    with pytest.raises(DataFileError, match=r"data_batch_3 is not a CIFAR-10 batch: it names .*system"):
        CIFAR10(root=str(tmp_path / "shared"), download=False, val_size=10).setup()
    assert not marker.exists()


@pytest.mark.parametrize("name", [".aelab.lock", "error.log", "train.log", "csv/metrics.csv", "checkpoints"])
def test_a_run_folder_holding_a_symbolic_link_is_refused_before_anything_is_written_through_it(run, tmp_path, name):
    """issue 34: a shared run's .aelab.lock linked to a file of yours was truncated by resume=<folder>; linked logs
    and CSV were truncated or appended to."""
    from aelab.run import precheck
    from aelab.store.files import linked_paths

    folder = copy_run(run, tmp_path / "shared")
    victim = tmp_path / "mine"
    victim.mkdir()
    (victim / "precious.txt").write_text("precious\n")
    target = victim if name == "checkpoints" else victim / "precious.txt"
    link = folder / name
    if link.is_dir():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    assert linked_paths(folder) == [link]
    cfg = compose_config(folder, [*QUICK, "trainer.max_epochs=2"])
    with pytest.raises(precheck.Refused, match=f"{link} is a symbolic link .*aelab writes nothing through a link"):
        precheck.prepare(cfg, folder, checked=True)
    assert (victim / "precious.txt").read_text() == "precious\n" and sorted(os.listdir(victim)) == ["precious.txt"]


def test_the_lock_never_opens_through_a_link(tmp_path):
    from aelab.store.locks import FolderInUse, FolderLock

    victim = tmp_path / "precious.txt"
    victim.write_text("precious\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".aelab.lock").symlink_to(victim)
    with pytest.raises(FolderInUse, match="is a symbolic link"):
        FolderLock(tmp_path / "run").acquire()
    assert victim.read_text() == "precious\n"


def test_export_eval_and_compare_refuse_a_linked_folder_of_a_run(run, tmp_path):
    import aelab
    from aelab.deploy.export import export
    from aelab.errors import RunFolderError
    from aelab.evaluation.runner import evaluate_path

    folder = copy_run(run, tmp_path / "shared")
    mine = tmp_path / "mine"
    mine.mkdir()
    (folder / "export").symlink_to(mine)
    loaded = aelab.load_run(folder)  # reading through it is harmless
    with pytest.raises(RunFolderError, match="export is a symbolic link"):
        export(loaded, "safetensors", "autoencoder")
    results = evaluate_path(folder, tasks={})
    assert isinstance(results[str(folder)], RunFolderError)
    assert os.listdir(mine) == []
    (folder / "export").unlink()
    (folder / "comparison").symlink_to(mine)
    with pytest.raises(RunFolderError, match="comparison is a symbolic link"):
        aelab.compare([folder])
    assert os.listdir(mine) == []


@pytest.mark.slow  # a whole aelab-train process or a search's checks: 7-11 s (make test stays < 5 min)
def test_a_sweep_whose_job_folder_holds_a_link_is_refused_before_any_job_opens_its_log(tmp_path, cli):
    """A sweep job's log (Hydra's file handler) opens before the job's own checks: the sweep refuses the whole
    folder first, and the link's target is quoted, not written out raw (a newline in it could inject a line)."""
    sweep = ["-m", *TINY, "model=mlp", "model.bottleneck=4,8", "sweep.name=s"]
    first = cli(*sweep)
    assert first.returncode == 0, first.stderr[-2000:]
    job = tmp_path / "outputs" / "sweeps" / "s" / "model.bottleneck=4"
    victim = tmp_path / "precious.txt"
    victim.write_text("precious\n")
    (job / "train.log").unlink()
    (job / "train.log").symlink_to(victim)
    again = cli(*sweep)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert f"model.bottleneck=4/train.log is a symbolic link (to '{victim}')" in again.stderr
    assert victim.read_text() == "precious\n"


# ------------------------------------------------------------------ issue 34, third round
def _record(folder: Path, **changes) -> None:
    record = json.loads((folder / "metrics.json").read_text())
    record.update(changes)
    (folder / "metrics.json").write_text(json.dumps(record))


def _task_folder(conf: Path, marker: Path) -> Path:
    """A config folder whose eval task ``zzz`` would copy a file to ``marker`` (and ``yyy`` run a shell command)."""
    (conf / "eval").mkdir(parents=True)
    copy = {"_target_": "shutil.copyfile", "src": "/etc/hostname", "dst": str(marker)}
    (conf / "eval" / "zzz.yaml").write_text(json.dumps({"zzz": copy}) + "\n")
    system = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    (conf / "eval" / "yyy.yaml").write_text(json.dumps({"yyy": system}) + "\n")
    return conf


@pytest.mark.parametrize("where", ["relative", "absolute", "linked_in"])
def test_a_recorded_search_path_into_the_run_folder_is_refused_naming_the_entry(run, tmp_path, where, monkeypatch):
    """F8: ``"search_path": ["file://shared/S1/conf"]`` in a shared run's metrics.json made ``aelab-eval eval=[zzz]``
    build the folder's own task (``shutil.copyfile``)."""
    from aelab.errors import ConfigError
    from aelab.evaluation.runner import evaluate_path
    from aelab.run.extensions import run_context

    marker = tmp_path / "ran"
    folder = copy_run(run, tmp_path / "shared" / "S1")
    _task_folder(folder / "conf", marker)
    monkeypatch.chdir(tmp_path)
    entry = {
        "relative": "file://shared/S1/conf",
        "absolute": f"file://{folder / 'conf'}",
        "linked_in": f"file://{tmp_path / 'looks_outside'}",
    }[where]
    if where == "linked_in":
        (tmp_path / "looks_outside").symlink_to(folder / "conf")
    _record(folder, search_path=[entry])
    why = "relative path" if where == "relative" else "inside the run folder"
    with pytest.raises(ConfigError, match=f"search_path entry '{entry}' was refused: .*{why}"):
        run_context(folder, trusted=[])
    results = evaluate_path(folder, tasks=None)  # the automatic tasks compose with the run's search path
    assert isinstance(results[str(folder)], ConfigError) and "search_path entry" in str(results[str(folder)])
    assert not marker.exists()


def test_eval_tasks_pass_the_allowlist_even_from_a_config_folder_the_user_names(run, tmp_path, monkeypatch):
    """F8: a named config folder (your own, outside every run folder) still only builds evaluation tasks: a task that
    is ``shutil.copyfile`` or ``os.system`` is one line naming ``eval.<task>._target_``."""
    from aelab.config.checks import entry_problems
    from aelab.evaluation.runner import compose_tasks
    from aelab.run.compose import compose
    from aelab.run.extensions import TRUST_CONFIG_ENV, run_context

    marker = tmp_path / "ran"
    conf = _task_folder(tmp_path / "mine" / "conf", marker)
    folder = copy_run(run, tmp_path / "shared" / "S1")
    _record(folder, search_path=[f"file://{conf}"])
    with pytest.raises(ConfigError, match="not read unless you name it"):
        run_context(folder, trusted=[])
    monkeypatch.setenv(TRUST_CONFIG_ENV, str(conf))
    search_path = run_context(folder, trusted=[])
    assert search_path == [f"file://{conf}"]
    with pytest.raises(TrustError, match=r"^eval\.zzz\._target_=shutil\.copyfile .*was refused: it is outside"):
        compose_tasks(["zzz"], search_path)
    with pytest.raises(TrustError, match=r"^eval\.yyy\._target_=os\.system .*was refused"):
        compose_tasks(["yyy"], search_path)
    assert not marker.exists()
    # the option check no longer calls os "not on the Python path"
    cfg = compose("evaluate", ["run=x", "eval=[yyy]"], search_path)
    assert not any("Python path" in p for p in entry_problems("aelab-eval", cfg, ["run=x", "eval=[yyy]"]))
    assert set(compose_tasks(["probe"], search_path)) == {"probe"}  # aelab's own tasks still build


@pytest.mark.parametrize(
    "slot, target",
    [
        ("noise", "aelab.callbacks.OptunaPruning"),
        ("data", "aelab.models.Autoencoder"),
        ("model", "aelab.data.Sprites"),
        ("model.encoder", "aelab.callbacks.MetricsHistory"),
    ],
)
def test_an_allowed_class_in_a_place_that_takes_another_kind_is_refused_naming_the_key(run, tmp_path, slot, target):
    """F9: ``noise: {_target_: aelab.callbacks.OptunaPruning, storage: sqlite:////…/PWNED.db}`` passed the allowlist
    (a class under aelab.callbacks) and aelab-eval created the database."""
    import aelab

    db = tmp_path / "x" / "PWNED.db"
    db.parent.mkdir()
    pruning = {"storage": f"sqlite:///{db}", "study": "x", "trial": 0, "monitor": "m"}
    node = {"_target_": target, **(pruning if "Optuna" in target else {})}

    def edit(cfg):
        OmegaConf.update(cfg, slot, node, force_add=True, merge=False)

    folder = edit_config(copy_run(run, tmp_path / "shared" / "O"), edit)
    with pytest.raises(TrustError, match=rf"^{re.escape(slot)}\._target_={re.escape(target)} in .*not .*which is what"):
        aelab.load_run(folder)
    assert os.listdir(db.parent) == []


def _yours(tmp_path: Path) -> tuple[Path, str]:
    """A file of yours (the target of a link) and its sha256, which every probe below must leave unchanged."""
    import hashlib

    mine = tmp_path / "mine"
    mine.mkdir(exist_ok=True)
    victim = mine / "precious.txt"
    victim.write_text("precious\n")
    return victim, hashlib.sha256(victim.read_bytes()).hexdigest()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_out_inside_a_run_whose_predict_folder_is_a_link_is_refused_like_the_default(run, tmp_path):
    """F7: ``aelab-predict run=<run> input=sprites out=<run>/predict/sprites`` (and ``aelab-export ...
    out=<run>/predict/exp``) wrote into the link's target: the links were checked only without ``out=``."""
    from aelab.deploy.export import export
    from aelab.deploy.predict import predict
    from aelab.errors import RunFolderError
    from aelab.run.load import load_run

    victim, sha = _yours(tmp_path)
    folder = copy_run(run, tmp_path / "shared")
    shutil.rmtree(folder / "predict", ignore_errors=True)
    (folder / "predict").symlink_to(victim.parent)
    loaded = load_run(folder)
    with pytest.raises(RunFolderError, match=f"{folder / 'predict'} is a symbolic link"):
        predict(loaded, "sprites", folder / "predict" / "sprites", progress=False)
    with pytest.raises(RunFolderError, match=f"{folder / 'predict'} is a symbolic link"):
        export(loaded, "safetensors", "autoencoder", folder / "predict" / "exp")
    # reached through a link of yours that leads into the run folder: the same check
    (tmp_path / "via").symlink_to(folder / "predict")
    with pytest.raises(RunFolderError, match="is a symbolic link"):
        predict(loaded, "sprites", tmp_path / "via" / "sprites", progress=False)
    assert os.listdir(victim.parent) == ["precious.txt"] and _sha(victim) == sha
    # an out= of your own, outside the run folder, is still used (the run's link is not followed)
    predict(loaded, "sprites", tmp_path / "own", ["codes"], progress=False)
    assert (tmp_path / "own" / "codes.npy").is_file()


@pytest.mark.parametrize("name", [".aelab.lock", "train.log", "csv/metrics.csv"])
def test_a_hard_linked_file_written_in_place_is_refused_before_anything_is_written(run, tmp_path, name):
    """F4: an interrupted shared run whose lock, train.log or metrics.csv is a hard link to a file of yours:
    ``aelab-train resume=<run>`` truncated the lock, appended to the log, rewrote the CSV."""
    from aelab.run import precheck

    victim, sha = _yours(tmp_path)
    folder = copy_run(run, tmp_path / "shared")
    (folder / name).unlink(missing_ok=True)
    os.link(victim, folder / name)
    cfg = compose_config(folder, [*QUICK, "trainer.max_epochs=2"])
    with pytest.raises(precheck.Refused, match=f"{folder / name} is a hard link .*other name"):
        precheck.prepare(cfg, folder, checked=True)
    assert _sha(victim) == sha


def test_the_lock_never_writes_through_a_hard_link(tmp_path):
    from aelab.store.locks import FolderInUse, FolderLock

    victim, sha = _yours(tmp_path)
    (tmp_path / "run").mkdir()
    os.link(victim, tmp_path / "run" / ".aelab.lock")
    with pytest.raises(FolderInUse, match="is a hard link"):
        FolderLock(tmp_path / "run").acquire()
    assert _sha(victim) == sha


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_in_place_writes_check_the_file_when_they_open_it(tmp_path, kind):
    """F6: a file swapped for a link during a run (after the folder's check) is refused when it is opened:
    ``O_NOFOLLOW`` and ``st_nlink`` at open time; ``"w"`` truncates only after the checks."""
    import logging

    from aelab.errors import LinkedFileError
    from aelab.store.files import NoFollowFileHandler, open_in_place

    victim, sha = _yours(tmp_path)
    path = tmp_path / "run" / "train.log"
    path.parent.mkdir()
    path.symlink_to(victim) if kind == "symlink" else os.link(victim, path)
    for mode in ("a", "w"):
        with pytest.raises(LinkedFileError, match=f"{path} is a {'symbolic' if kind == 'symlink' else 'hard'} link"):
            open_in_place(path, mode)
    handler = NoFollowFileHandler(str(path))  # Hydra's train.log handler: writes nowhere rather than through it
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "injected", None, None))
    handler.close()
    assert _sha(victim) == sha
    path.unlink()
    with open_in_place(path, "a") as fh:  # its own file: appended as before
        fh.write("line\n")
    assert path.read_text() == "line\n"


def test_the_end_of_run_summary_is_not_appended_through_a_train_log_swapped_for_a_link(run, tmp_path, caplog):
    """F6: ``train.log`` replaced by a symbolic link mid-run: the summary appended to the link's target."""
    from types import SimpleNamespace

    from aelab.run.summary import print_run_summary
    from aelab.store.record import RunRecord

    victim, sha = _yours(tmp_path)
    folder = copy_run(run, tmp_path / "shared")
    (folder / "train.log").unlink()
    (folder / "train.log").symlink_to(victim)
    job = SimpleNamespace(run_dir=folder, record=RunRecord.read(folder), cfg=OmegaConf.create({"verbose": False}))
    assert print_run_summary(job, multirun=False)  # the summary is made, and not written through the link
    assert _sha(victim) == sha
    assert "the summary was not added" in caplog.text and "symbolic link" in caplog.text


def test_sweep_given_a_value_instead_of_its_options_is_one_line(tmp_path, cli):
    """``aelab-train -m sweep=sw …`` (a string where the ``sweep`` group is a mapping) ended in a traceback
    (``'str' object has no attribute 'name'``)."""
    result = cli("-m", "sweep=sw", *TINY, "model=mlp", "model.bottleneck=4,8")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "sweep='sw' is not one of the sweep's options" in result.stderr and "sweep.name=" in result.stderr
    assert not (tmp_path / "outputs" / "sweeps").exists() or not any((tmp_path / "outputs" / "sweeps").iterdir())


def test_a_recorded_package_folder_that_resolves_into_the_run_folder_says_so(tmp_path):
    """``extension_packages`` recorded as ``<run>/checkpoints/..`` said "not there on this machine"; it is the run
    folder itself."""
    from aelab.run.extensions import make_importable

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"it resolves to {run_dir}, inside the run folder"):
        make_importable({"sharedrun": str(run_dir / "checkpoints" / "..")}, run_dir, ["sharedrun"])
