"""The VAE core: KL, reparameterisation and likelihoods against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from finvae.nn import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    bernoulli_nll,
    gaussian_kl,
    gaussian_nll,
    reparameterize,
    safe_log_var,
)
from finvae.training import seeded


def test_gaussian_kl_matches_monte_carlo_estimate():
    with seeded(0):
        mu = torch.randn(4, 3, dtype=torch.float64)
        log_var = torch.randn(4, 3, dtype=torch.float64)
        z = reparameterize(mu, log_var.expand(100_000, 4, 3))
    std = torch.exp(0.5 * log_var)
    # KL = E_q[log q(z) - log p(z)], estimated from samples of q.
    log_ratio = (Normal(mu, std).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    exact = gaussian_kl(mu, log_var)
    assert exact.shape == (4,)
    assert torch.all((estimate - exact).abs() < 5 * stderr)


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.equal(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))
    assert torch.all(gaussian_kl(torch.full((2, 5), 0.1), torch.full((2, 5), -0.2)) > 0)


def test_reparameterize_samples_with_the_standard_deviation_not_the_variance():
    mu, log_var = torch.tensor([1.0, -2.0]), torch.tensor([math.log(4.0), math.log(0.25)])
    with seeded(1):
        z = reparameterize(mu.expand(200_000, 2), log_var.expand(200_000, 2))
    torch.testing.assert_close(z.mean(0), mu, atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([2.0, 0.5]), atol=0.02, rtol=0)


def test_gradients_flow_through_the_reparameterisation():
    mu = torch.zeros(8, 2, requires_grad=True)
    log_var = torch.zeros(8, 2, requires_grad=True)
    with seeded(2):
        z = reparameterize(mu, log_var)
    eps = z.detach()  # mu = 0 and std = 1, so z is the noise itself
    z.pow(2).sum().backward()
    torch.testing.assert_close(mu.grad, 2 * eps)
    # dz/dlog_var = 0.5 * std * eps, so d(z^2)/dlog_var = z * std * eps = eps^2 here.
    torch.testing.assert_close(log_var.grad, eps.pow(2))


def test_safe_log_var_clamps_to_its_range():
    out = safe_log_var(torch.tensor([-1e4, 0.0, 1e4]))
    assert out.tolist() == [LOG_VAR_MIN, 0.0, LOG_VAR_MAX]
    assert torch.isfinite(gaussian_kl(torch.zeros(1, 3), out[None])).all()


def test_bernoulli_nll_is_the_summed_cross_entropy():
    with seeded(3):
        logits, x = torch.randn(5, 1, 4, 4), torch.randint(0, 2, (5, 1, 4, 4)).float()
    expected = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), expected)


def test_gaussian_nll_matches_torch_distributions():
    with seeded(4):
        x, mean, log_scale = torch.randn(6, 3, 5), torch.randn(6, 3, 5), 0.3 * torch.randn(3, 1)
    expected = -Normal(mean, log_scale.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(x, mean, log_scale), expected)


@pytest.mark.parametrize("fill", [float("nan"), 1e30])
def test_gaussian_nll_with_mask_ignores_masked_entries(fill):
    with seeded(5):
        x, mean_init = torch.randn(4, 6), torch.randn(4, 6)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) > 0.4
    mean = mean_init.clone().requires_grad_(True)
    log_scale = torch.zeros(6, requires_grad=True)
    nll = gaussian_nll(torch.where(mask, x, torch.tensor(fill)), mean, log_scale, mask)
    expected = torch.stack(
        [-Normal(mean_init[i][mask[i]], 1.0).log_prob(x[i][mask[i]]).sum() for i in range(4)]
    )
    torch.testing.assert_close(nll.detach(), expected)
    nll.sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()
    assert torch.all(mean.grad[~mask] == 0)  # masked entries pull on nothing


@pytest.mark.parametrize(("images", "message"), [
    (torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8), r"float32 images in \[0, 1\]; got dtype torch.uint8"),
    (torch.rand(2, 1, 28, 28, dtype=torch.float64), "got dtype torch.float64"),
    (torch.rand(2, 28, 28), r"add the channel axis: x.unsqueeze\(1\)"),
    (torch.rand(2, 3, 32, 32), r"shape \(n, 1, 28, 28\); got \(2, 3, 32, 32\)"),
    (255 * torch.rand(2, 1, 28, 28), r"needs images in \[0, 1\]; got values from .* x.float\(\) / 255"),
])
def test_conv_vae_says_what_images_it_takes(images, message):
    from finvae.nn import ConvVAE

    with pytest.raises(ValueError, match=message):
        ConvVAE(2).elbo_terms(images)


def test_conv_vae_decodes_codes_given_as_float64_arrays():
    import numpy as np

    from finvae.nn import ConvVAE

    model = ConvVAE(2).eval()
    codes = np.zeros((3, 2))  # what finvae.concepts.shift_codes gives for one strength
    with torch.no_grad():
        assert model.decode(codes).shape == (3, 1, 28, 28)
        assert torch.equal(model.decode(codes), model.decode(torch.zeros(3, 2)))


def test_conv_vae_takes_an_empty_batch_and_refuses_half_precision_images():
    from finvae.nn import ConvVAE

    recon, kl = ConvVAE(2).elbo_terms(torch.zeros(0, 1, 28, 28))
    assert recon.shape == kl.shape == (0,)
    with pytest.raises(ValueError, match="float32 images"):
        ConvVAE(2).elbo_terms(torch.rand(2, 1, 28, 28, dtype=torch.float16))
