"""The VAE family: the bounds, the KL, active units, generation outputs and the configs."""

import math

import pytest
import torch
from conftest import needs_fashion_mnist
from wandb_files import offline_runs, read_offline_run

from aelab.models import VAE
from aelab.models.vae import kl_to_standard_normal
from aelab.nets import MLPDecoder, MLPEncoder


def small_vae(**kwargs) -> VAE:
    torch.manual_seed(0)
    from functools import partial

    return VAE(
        (1, 8, 8),
        bottleneck=4,
        encoder=partial(MLPEncoder, hidden=[32]),
        decoder=partial(MLPDecoder, hidden=[32]),
        **kwargs,
    ).eval()


def binary_images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) < 0.3).float()


def analytic_elbo(model, x, repeats):
    """E_q[log p(x|z)] - KL, the expectation estimated with many samples (KL in closed form)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return torch.stack([model.terms(x, x, g)["elbo"] for _ in range(repeats)]).mean(0)


def test_kl_of_a_posterior_equal_to_the_prior_is_zero():
    assert torch.equal(kl_to_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3, 5))
    assert (kl_to_standard_normal(torch.randn(3, 5), torch.randn(3, 5)) >= 0).all()
    # through the model: an encoder whose outputs are all zero gives q(z|x) = N(0, I)
    model = small_vae()
    head = model.encoder.head
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    with torch.no_grad():
        terms = model.terms(binary_images(), binary_images())
    assert torch.allclose(terms["kl"], torch.zeros(16), atol=1e-6)


def test_iwae_with_one_sample_equals_the_elbo_estimate():
    model, x = small_vae(), binary_images()
    g = torch.Generator().manual_seed(2)
    iwae1 = torch.stack([model.iwae_bound(x, 1, g) for _ in range(3000)]).mean(0)
    elbo = analytic_elbo(model, x, 3000)
    assert torch.allclose(iwae1, elbo, atol=0.15), (iwae1 - elbo).abs().max()


@pytest.mark.parametrize("k", [5, 50])
def test_iwae_with_more_samples_is_never_below_the_elbo(k):
    model, x = small_vae(), binary_images()
    g = torch.Generator().manual_seed(3)
    bound = torch.stack([model.iwae_bound(x, k, g) for _ in range(100)]).mean(0)
    elbo = analytic_elbo(model, x, 2000)
    assert (bound >= elbo - 0.1).all(), (bound - elbo).min()
    assert bound.mean() > elbo.mean()  # strictly tighter on average


def test_iwae_is_chunked_without_changing_the_estimate():
    x = binary_images(10)
    # samples in passes of 2 (20 decoder inputs) draw the same noise as one big pass
    a = small_vae(iwae_chunk=20).iwae_bound(x, 30, torch.Generator().manual_seed(4))
    b = small_vae(iwae_chunk=10_000).iwae_bound(x, 30, torch.Generator().manual_seed(4))
    assert torch.allclose(a, b, atol=1e-5)
    # fewer decoder inputs than images: images in groups, the same estimate up to noise
    c = torch.stack(
        [small_vae(iwae_chunk=7).iwae_bound(x, 30, torch.Generator().manual_seed(s)) for s in range(20)]
    ).mean(0)
    d = torch.stack(
        [small_vae(iwae_chunk=10_000).iwae_bound(x, 30, torch.Generator().manual_seed(s + 99)) for s in range(20)]
    ).mean(0)
    assert torch.allclose(c, d, atol=0.2)


def test_gaussian_likelihood_learned_sigma_and_warmup_and_free_bits():
    model = small_vae(likelihood="gaussian", learn_sigma=True, sigma=0.2, kl_warmup_steps=100, beta=4.0, free_bits=0.5)
    assert model.log_sigma.requires_grad and math.isclose(model.log_sigma.exp().item(), 0.2, rel_tol=1e-6)
    assert model.kl_weight() == 0.0  # step 0 of the warm-up
    x = torch.rand(4, 1, 8, 8)
    terms = model.terms(x, x)
    obj = model.per_image_objective(terms)
    assert torch.allclose(obj, terms["recon"])  # the KL is off at the start of the warm-up
    model._trainer = None
    model.kl_warmup_steps = 0
    expected = terms["recon"] + 4.0 * terms["kl_dims"].clamp(min=0.5).sum(1)
    assert torch.allclose(model.per_image_objective(terms), expected)


def test_bad_vae_options_are_refused():
    from aelab.errors import ConfigError

    with pytest.raises(ConfigError, match="likelihood"):
        small_vae(likelihood="poisson")
    with pytest.raises(ConfigError, match="beta"):
        small_vae(beta=-1)


def test_vae_on_sprites_uses_some_but_not_all_latent_dimensions(run_train):
    summary, run_dir = run_train(
        "model=vae",
        "model.bottleneck=32",
        "data.binarize=dynamic",
        "trainer.max_epochs=10",
        "data.num_train=4000",
        "data.val_size=500",
        "data.num_test=500",
        "model.iwae_samples=0",
        "model.optimizer.lr=2e-3",
        tiny=True,
    )
    assert summary["status"] == "completed", summary["error"]
    active = summary["final"]["test/active_units"]
    assert 0 < active < 32, active
    assert len(summary["kl_per_dim"]) == 32
    assert sum(k > 0.01 for k in summary["kl_per_dim"]) == active  # the logged count matches the KLs


def test_vae_run_writes_bounds_gap_and_generation(run_train):
    summary, run_dir = run_train(
        "model=vae",
        "model.bottleneck=8",
        "data.binarize=dynamic",
        "trainer.max_epochs=2",
        "model.iwae_samples=20",
        "logger=wandb",
    )
    final = summary["final"]
    for key in (
        "val/elbo",
        "val/kl",
        "val/recon",
        "val/loss",
        "gap/elbo",
        "test/nll_iwae",
        "test/elbo",
        "val/active_units",
    ):
        assert key in final, key
    assert final["test/nll_iwae"] <= -final["test/elbo"] + 1.0  # NLL estimate below the negative ELBO (up to noise)
    assert math.isfinite(final["test/nll_iwae"]) and final["test/nll_iwae"] > 0
    # gap/elbo is (train ELBO - val ELBO): positive when validation is worse
    assert final["gap/elbo"] == pytest.approx(final["train_eval/elbo"] - final["val/elbo"], abs=1e-4)
    assert summary["nll_iwae"] == {"samples": 20, "images": 200}
    assert summary["objective"]["metric"] == "val/loss"
    for name in ("samples.png", "interpolation.png", "traversal.png"):
        assert (run_dir / "samples" / name).is_file(), name
    (folder,) = offline_runs(run_dir)
    media = read_offline_run(folder)["media"]
    for key in ("generation/samples", "generation/interpolation", "generation/traversal"):
        assert any(key in m for m in media), key


@pytest.mark.parametrize("model, beta, latent", [("vae", 1.0, 50), ("conv_vae", 1.0, 16), ("beta_vae", 4.0, 10)])
def test_vae_configs(make_cfg, model, beta, latent):
    cfg = make_cfg(f"model={model}")
    assert cfg.model.beta == beta and cfg.model.bottleneck == latent
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"


def test_conv_vae_trains(run_train):
    summary, _ = run_train("model=conv_vae", "model.iwae_samples=5", "model.bottleneck=4")
    assert summary["status"] == "completed" and summary["final"]["test/nll_iwae"] > 0


@pytest.mark.slow
@needs_fashion_mnist
def test_vae_on_binarized_fashion_mnist_has_a_finite_nll_below_400_nats(run_train):
    summary, _ = run_train(
        "model=vae",
        "data=fashion_mnist",
        "data.binarize=dynamic",
        "trainer.max_epochs=3",
        "data.limit_test=2000",
        "model.iwae_samples=1000",
        tiny=False,
        name="vae_fmnist",
    )
    assert summary["status"] == "completed", summary["error"]
    nll = summary["final"]["test/nll_iwae"]
    assert math.isfinite(nll) and 0 < nll < 400, nll
    assert nll <= -summary["final"]["test/elbo"] + 0.5
