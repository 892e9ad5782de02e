"""The objectives beyond the plain AE/VAE — β-TC-VAE, IWAE, WAE-MMD, VQ-VAE: each trains, and its estimator is right."""

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from aelab.data.sprites import make_sprites
from aelab.models import IWAE, VQVAE, Autoencoder, BetaTCVAE, MMDPenalty
from aelab.models.tcvae import decomposed_kl
from aelab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def sprites():
    images, _, _ = make_sprites(512, 28, 1, seed=3)
    return images.float() / 255


def mlp_nets(activation="relu"):
    return (
        partial(MLPEncoder, hidden=[128], activation=activation),
        partial(MLPDecoder, hidden=[128], activation=activation),
    )


def conv_nets(upsample="nearest"):
    return partial(ConvEncoder, channels=[8, 16]), partial(ConvDecoder, channels=[8, 16], upsample=upsample)


def objective_of(model, x):
    model.eval()
    with torch.no_grad():
        metrics = model.per_sample_metrics(x, torch.Generator().manual_seed(0))[0]
    model.train()
    return float(metrics["loss" if "loss" in metrics else "recon_loss"].mean())


def fit(model, images, steps=40):
    loader = DataLoader(
        [{"image": im} for im in images], batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, loader)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BetaTCVAE(
            input_shape=SHAPE,
            bottleneck=6,
            beta=4.0,
            sampling="mss",
            dataset_size=512,
            encoder=mlp_nets("tanh")[0],
            decoder=mlp_nets("tanh")[1],
            iwae_samples=0,
        ),
        lambda: BetaTCVAE(
            input_shape=SHAPE, bottleneck=6, beta=4.0, encoder=conv_nets()[0], decoder=conv_nets()[1], iwae_samples=0
        ),
        lambda: IWAE(
            input_shape=SHAPE,
            bottleneck=6,
            train_samples=5,
            encoder=mlp_nets("tanh")[0],
            decoder=mlp_nets("tanh")[1],
            iwae_samples=0,
        ),
        lambda: Autoencoder(
            input_shape=SHAPE, bottleneck=6, mmd=MMDPenalty(weight=0.013), encoder=mlp_nets()[0], decoder=mlp_nets()[1]
        ),
        lambda: VQVAE(
            input_shape=SHAPE,
            bottleneck=8,
            code_dim=2,
            codebook_size=32,
            encoder=conv_nets("transpose")[0],
            decoder=conv_nets("transpose")[1],
        ),
    ],
    ids=["tcvae-mlp", "tcvae-conv", "iwae-mlp", "wae-mlp", "vqvae-conv"],
)
def test_each_objective_trains_on_sprites_and_its_loss_falls(make, sprites):
    torch.manual_seed(0)
    model = make()
    before = objective_of(model, sprites[:256])
    fit(model, sprites)
    after = objective_of(model, sprites[:256])
    assert after < 0.9 * before, (type(model).__name__, before, after)
    samples = model.sample(8, seed=1, batches=[{"image": sprites[:128]}])
    assert samples.shape == (8, *SHAPE) and torch.isfinite(samples).all() and 0 <= samples.min() and samples.max() <= 1


def test_vqvae_uses_more_than_one_code_and_restarts_dead_entries(sprites):
    torch.manual_seed(0)
    model = VQVAE(
        input_shape=SHAPE,
        bottleneck=8,
        code_dim=4,
        codebook_size=64,
        encoder=mlp_nets()[0],
        decoder=mlp_nets()[1],
        dead_code_steps=5,
    )
    fit(model, sprites, steps=30)
    codes = model.codes(sprites[:256])
    assert codes.shape == (256, 2) and codes.dtype == torch.long
    assert len(codes.unique()) > 1
    assert int(model.quantizer.restarts) > 0  # entries unchosen for 5 steps were moved to encoder outputs
    # the quantised code is made of codebook entries, and the checkpointed state holds the codebook
    z = model.encode(sprites[:4]).view(4, 2, 4)
    assert torch.allclose(z, model.quantizer.embedding[codes[:4]])
    assert {"quantizer.embedding", "quantizer.cluster_size", "quantizer.embed_sum"} <= set(model.state_dict())


def test_vqvae_code_dim_must_divide_the_bottleneck():
    from aelab.errors import ConfigError

    # (from the command line the same check refuses the run before its folder exists: test_cli_errors' structural
    # errors)
    with pytest.raises(ConfigError, match="model.code_dim=3 must divide model.bottleneck=8"):
        VQVAE(input_shape=SHAPE, bottleneck=8, code_dim=3)


def test_iwae_refuses_the_kl_options_it_would_ignore():
    from aelab.errors import ConfigError

    with pytest.raises(ConfigError, match="model.beta=4.0 do"):
        IWAE(input_shape=SHAPE, bottleneck=4, beta=4.0)


def brute_force_tc(z, mu, logvar):
    """The exact TC, MI and dimension-wise KL when the batch is the whole dataset (q(z) = 1/M Σ_j q(z|x_j)), by "
    "loops."""
    m, d = len(z), len(z[0])

    def normal(v, mean, lv):
        return math.exp(-0.5 * (math.log(2 * math.pi) + lv + (v - mean) ** 2 / math.exp(lv)))

    out = {"mi": [], "tc": [], "dwkl": []}
    for i in range(m):
        joint = sum(math.prod(normal(z[i][k], mu[j][k], logvar[j][k]) for k in range(d)) for j in range(m)) / m
        marginals = [sum(normal(z[i][k], mu[j][k], logvar[j][k]) for j in range(m)) / m for k in range(d)]
        log_q_given_x = sum(math.log(normal(z[i][k], mu[i][k], logvar[i][k])) for k in range(d))
        log_p = sum(math.log(normal(z[i][k], 0.0, 0.0)) for k in range(d))
        out["mi"].append(log_q_given_x - math.log(joint))
        out["tc"].append(math.log(joint) - sum(math.log(q) for q in marginals))
        out["dwkl"].append(sum(math.log(q) for q in marginals) - log_p)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def test_tc_estimate_matches_a_brute_force_computation_on_a_tiny_batch():
    g = torch.Generator().manual_seed(0)
    m, d, n = 6, 3, 1000
    mu = torch.randn(m, d, generator=g, dtype=torch.float64)
    mu[:, 1] = mu[:, 0] + 0.1 * mu[:, 1]  # two dependent dimensions: a clearly positive TC
    logvar = torch.randn(m, d, generator=g, dtype=torch.float64) * 0.3 - 1.0
    z = mu + (0.5 * logvar).exp() * torch.randn(m, d, generator=g, dtype=torch.float64)
    exact = brute_force_tc(z.tolist(), mu.tolist(), logvar.tolist())
    assert exact["tc"].mean() > 0.2
    # minibatch-weighted sampling normalises by N·M: with N images it is the exact value shifted by known constants
    mws = decomposed_kl(z, mu, logvar, dataset_size=n, sampling="mws")
    torch.testing.assert_close(mws["tc"], exact["tc"] + (d - 1) * math.log(n))
    torch.testing.assert_close(mws["mi"], exact["mi"] + math.log(n))
    torch.testing.assert_close(mws["dwkl"], exact["dwkl"] - d * math.log(n))
    # with N = M (the batch is the dataset) the stratified estimator's three terms still sum to log q(z|x) − log p(z)
    mss = decomposed_kl(z, mu, logvar, dataset_size=m, sampling="mss")
    total = exact["mi"] + exact["tc"] + exact["dwkl"]
    torch.testing.assert_close(mss["mi"] + mss["tc"] + mss["dwkl"], total)


def test_mmd_is_near_zero_for_prior_samples_and_large_for_shifted_codes():
    g = torch.Generator().manual_seed(0)
    penalty = MMDPenalty(weight=1.0)
    prior = torch.randn(400, 8, generator=g)
    same = penalty.mmd(torch.randn(400, 8, generator=g), prior)
    shifted = penalty.mmd(torch.randn(400, 8, generator=g) + 1.0, prior)
    assert abs(float(same)) < 0.02 and float(shifted) > 10 * abs(float(same)) and float(shifted) > 0.05


def test_iwae_bound_is_tighter_than_the_elbo_and_grows_with_k(sprites):
    torch.manual_seed(0)
    model = IWAE(
        input_shape=SHAPE,
        bottleneck=6,
        train_samples=5,
        encoder=mlp_nets("tanh")[0],
        decoder=mlp_nets("tanh")[1],
        iwae_samples=0,
    )
    fit(model, sprites, steps=20)
    model.eval()
    x = sprites[:128]

    def g():
        return torch.Generator().manual_seed(1)

    elbo = float(model.terms(x, x, g())["elbo"].mean())
    l5, l50 = (float(model.iwae_bound(x, k, g()).mean()) for k in (5, 50))
    assert elbo < l5 < l50, (elbo, l5, l50)


@pytest.mark.slow
def test_vqvae_killed_and_resumed_matches_an_uninterrupted_run(cli, tmp_path):
    """The codebook is EMA state in buffers, restarts draw random numbers: both must survive a SIGKILL exactly."""
    import json
    import signal

    from conftest import TINY

    base = [
        *TINY,
        "model=vqvae",
        "model.bottleneck=8",
        "model.code_dim=2",
        "model.codebook_size=64",
        "model.dead_code_steps=3",
        "trainer.max_epochs=4",
        "trainer.deterministic=true",
    ]
    kill = [
        "+callbacks.fault._target_=aelab.callbacks.FaultInjection",
        "+callbacks.fault.at_epoch=2",
        "+callbacks.fault.signal=SIGKILL",
        "+callbacks.fault.marker_dir=${paths.run_dir}",
    ]
    runs = tmp_path / "outputs" / "runs"
    assert cli(*base, "name=whole").returncode == 0
    assert cli(*base, "name=killed", *kill).returncode == -signal.SIGKILL
    resumed = cli(*base, "name=killed", *kill)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (json.loads((runs / n / "metrics.json").read_text()) for n in ("whole", "killed"))
    assert a["final"] == b["final"] and a["final"]["val/codebook_usage"] > 1
    assert a["codebook"]["restarts"] == b["codebook"]["restarts"] > 0


@pytest.mark.slow
def test_vqvae_and_tcvae_train_under_ddp_on_two_cpu_processes(cli, tmp_path):
    import json

    from conftest import TINY

    for model in ("vqvae", "tcvae"):
        result = cli(
            *TINY,
            f"model={model}",
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "model.bottleneck=8",
            *(["model.iwae_samples=0"] if model == "tcvae" else ["model.code_dim=2"]),
            f"name={model}",
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        record = json.loads((tmp_path / "outputs" / "runs" / model / "metrics.json").read_text())
        assert record["status"] == "completed" and record["world_size"] == 2
        if model == "vqvae":
            assert record["final"]["test/codebook_usage"] > 1
