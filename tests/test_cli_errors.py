"""Bad input through the real command line: a clear message before training, nothing lost."""

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    return run_dir


def test_cli_trains_and_writes_a_complete_run_folder(cli, tmp_path):
    result = cli(*TINY, "model=mlp", "model.bottleneck=8")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.endswith("_mlp_sprites")
    for path in (
        ".hydra/config.yaml",
        "metrics.json",
        "checkpoints/last.ckpt",
        "csv/metrics.csv",
        "train.log",
        "samples/recon_epoch=001.png",
    ):
        assert (run_dir / path).is_file(), path
    assert json.loads((run_dir / "metrics.json").read_text())["bottleneck"] == 8


def test_unknown_group_option_lists_the_choices(cli):
    result = cli("model=nope")
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    for choice in ("conv", "conv_pool", "linear", "mlp", "sparse", "contractive"):
        assert choice in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["noise=gaussian", "noise.sigma=-1"], "noise.sigma is a standard deviation and must be >= 0 (got -1"),
        (["noise=masking", "noise.p=1.5"], "noise.p is a probability and must lie in [0, 1] (got 1.5)"),
        (["model.bottleneck=0"], "model.bottleneck is the size of the code and must be a positive integer (got 0)"),
        (
            ["model.decoder.upsample=cubic"],
            "model.decoder.upsample='cubic' is not one of ['transpose', 'nearest', 'bilinear', 'unpool']",
        ),
        (["data.batch_size=many"], "data.batch_size='many' has the wrong type: expected int"),
        (["+data.bach_size=3"], "data.bach_size is not an option of data; did you mean data.batch_size?"),
        (["trainer.precision=8-mixed"], "trainer.precision='8-mixed' is not one of"),
        (["resume=sometimes"], "resume='sometimes' must be auto, never, or an existing run folder"),
    ],
)
def test_bad_values_fail_in_seconds_without_a_run_folder(cli, tmp_path, overrides, message):
    started = time.monotonic()
    result = cli(*TINY, *overrides)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "nothing was run" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "runs").exists() or not any((tmp_path / "outputs" / "runs").iterdir())
    assert elapsed < 30, f"refusing a bad config took {elapsed:.1f} s"  # generous: ~1 s on an idle machine


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=conv", "data.image_size=30"], "height and width must be divisible by 4; the images are 30x30"),
        (["model=conv", "model.decoder.upsample=unpool"], "needs the encoder's max-pooling indices"),
        (["model=vqvae", "model.code_dim=3"], "model.code_dim=3 must divide model.bottleneck=32"),
    ],
)
def test_structural_errors_fail_before_training_with_one_message(cli, tmp_path, overrides, message):
    result = cli(*TINY, *overrides)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # the model's own check runs when its size is estimated (meta device), before any run folder is made
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_bottleneck_larger_than_the_input_is_a_warning(cli):
    result = cli(
        *TINY, "model=linear", "model.bottleneck=1000", "trainer.max_epochs=1", "data.limit_train=64", "test=false"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.bottleneck=1000 is not smaller than the input (784 values per image)" in result.stdout + result.stderr


def test_unwritable_output_folder_and_full_disk_fail_at_start(cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = cli(*TINY, f"paths.output_dir={blocker}/outputs")
    assert result.returncode != 0 and "is not a folder. Set paths.output_dir to a writable folder" in result.stderr
    result = cli(*TINY, "paths.min_free_mb=1e12")
    assert result.returncode != 0 and "less than paths.min_free_mb" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dataset_error_names_the_places_searched(cli, tmp_path):
    result = cli("data=mnist", f"data.root={tmp_path / 'nowhere'}", "data.download=false", "trainer.max_epochs=1")
    assert result.returncode != 0
    assert "dataset 'mnist' was not found. Looked in:" in result.stderr
    assert str(tmp_path / "nowhere" / "mnist") in result.stderr
    assert "/usr/share/datasets/mnist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_key_without_plus_gets_aelabs_message_not_hydras_advice(cli, tmp_path):
    started = time.time()
    result = cli("model.bottelneck=8", "data=sprites")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    # aelab's words, with or without "+": not Hydra's "To append to your config use +model.bottelneck=8"
    assert "model.bottelneck is not an option of model; did you mean model.bottleneck?" in result.stderr
    assert "To append" not in result.stderr and not (tmp_path / "outputs").exists()
    assert time.time() - started < 30  # ~1 s on an idle machine


@pytest.mark.parametrize("steps_per_call", [1, 8])
def test_nan_loss_stops_with_a_message_and_keeps_checkpoint_and_metrics(cli, tmp_path, steps_per_call):
    result = cli(
        *TINY,
        "model=linear",
        "trainer.max_epochs=3",
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=1e4",
        "~model.optimizer.weight_decay",
        f"steps_per_call={steps_per_call}",
    )
    assert result.returncode != 0
    assert "the training loss became" in result.stderr
    run_dir = only_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error_type"] == "NonFiniteLossError"
    last = run_dir / "checkpoints" / "last.ckpt"
    if steps_per_call == 1:  # checked before every step: the weights from before the bad one are saved
        assert "The weights from before this step are saved" in metrics["error"]
    else:  # checked once per call: the call's later steps made the weights non-finite, and they are not saved
        assert "checked once per call" in metrics["error"] and not last.exists()  # (no epoch had ended)
    if last.exists():
        ckpt = torch.load(last, weights_only=False)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert steps_per_call != 1 or last.exists()
    assert (run_dir / "error.log").is_file()


def test_a_path_with_an_equals_sign_is_taken_as_typed(tmp_path):
    """A sweep job's folder (``model.k=4``) is a path Hydra's grammar would refuse unquoted."""
    from aelab.cli.common import quote_paths

    job = tmp_path / "sweeps" / "s" / "model.k=4"
    job.mkdir(parents=True)
    assert quote_paths([f"run={job}", "eval=[probe]", "model.k=2,4", "name=a=b"]) == [
        f"run='{job}'",
        "eval=[probe]",
        "model.k=2,4",
        "name=a=b",
    ]
    assert quote_paths(["run=./it's=here"]) == ["run='./it\\'s=here'"]
    assert quote_paths(["data.path=/data/a=1,/data/b=2"]) == ["data.path=/data/a=1,/data/b=2"]  # a sweep of paths
    # a sweep job of two keys (issue 34: the "next:" command a run printed failed with "mismatched input '='")
    two = tmp_path / "sweeps" / "s" / "model.bottleneck=8,seed=0"
    spaced = tmp_path / "my runs" / "a,b"
    two.mkdir(parents=True)
    spaced.mkdir(parents=True)
    assert quote_paths([f"run={two}", f"run={spaced}"]) == [f"run='{two}'", f"run='{spaced}'"]


def test_the_next_commands_a_run_prints_are_shell_words_the_entry_points_take(tmp_path):
    import shlex

    from aelab.cli.common import quote_paths
    from aelab.run.summary import run_summary
    from aelab.store.record import RunRecord

    run_dir = tmp_path / "my runs" / "model.bottleneck=8,seed=0"
    run_dir.mkdir(parents=True)
    record = {"status": "completed", "epochs": 1, "final": {}, "best": {}, "run_dir": str(run_dir)}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    _, plain = run_summary(RunRecord.read(run_dir))
    line = next(line for line in plain.splitlines() if line.startswith("next: "))
    eval_words = shlex.split(line[len("next: ") :].split("·")[0])
    assert eval_words == ["aelab-eval", f"run={run_dir}"]  # the shell gives the entry point one word
    assert quote_paths(eval_words[1:]) == [f"run='{run_dir}'"]  # which it quotes for Hydra


def test_a_name_too_long_and_an_optimizer_argument_torch_refuses_are_one_line_before_any_folder(
    make_cfg, cli, tmp_path
):
    """issue 34: a 300-character name= and model.optimizer.lr=-1 were tracebacks (the second after making the run
    folder)."""
    from aelab.errors import ConfigError
    from aelab.run.job import run_job

    for overrides, message in [
        (["model.optimizer.lr=-1"], r"model.optimizer \(lr=-1, .*\) cannot be built: Invalid learning rate: -1"),
        (
            ["model.scheduler={_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true, factor: 2.0}"],
            r"model.scheduler \(factor=2.0\) cannot be built: Factor should be < 1.0",
        ),
    ]:
        cfg = make_cfg(*overrides, name="bad")
        with pytest.raises(ConfigError, match=message):
            run_job(cfg, cli=False)  # (a job's folder is made by its launcher: here nothing is written into it)
        assert not (Path(cfg.paths.run_dir) / "metrics.json").exists()
    for option, message in [
        ("name=" + "x" * 300, "is 300 bytes long: a folder name holds at most 255"),
        ("model.optimizer.lr=-1", "cannot be built: Invalid learning rate: -1"),
    ]:
        result = cli(*TINY, option)
        assert result.returncode != 0 and "Traceback" not in result.stderr and message in result.stderr
        assert not (tmp_path / "outputs" / "runs").exists() or not any((tmp_path / "outputs" / "runs").iterdir())


def test_an_option_the_component_takes_but_its_config_does_not_list_is_one_line(cli, tmp_path):
    """``data=arrays data.val_size=10``: ArrayFile takes ``val_size`` but conf/data/arrays.yaml lists
    ``val_fraction``; Hydra's multi-line "Could not override … Key 'val_size' is not in struct" becomes one line
    saying how to give it."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((20, 8), dtype="float32"))
    result = cli("data=arrays", "data.path=x.npy", "data.val_size=10")
    assert result.returncode != 0 and "not in struct" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "aelab-train: error: data.val_size is an option its component takes that the config does not list: give "
        "+data.val_size=10 (Hydra adds a key only with +)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_the_python_api_raises_the_clis_config_error_for_a_misspelt_key(tmp_path, monkeypatch):
    """issue 34: ``aelab.train(["model.bottlenek=8"])`` raised Hydra's "To append … use +" instead."""
    import aelab
    from aelab.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="model.bottlenek is not an option of model; did you mean model.bottleneck?"):
        aelab.train(["model.bottlenek=8", *TINY])
    assert not (tmp_path / "outputs" / "runs").exists()
