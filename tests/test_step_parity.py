"""fp32 parity of the optimised training step against a slow, independent one.

The trainer computes the KL divergence with a hand-written gradient from a target distribution prepared once per
batch, and backpropagates the adversarial loss once, for the parameters and the adversary's sources together. The
slow step here does neither: it uses the textbook KL formula through autograd and takes the sources' gradient with
its own backward pass (`retain_graph`), then writes out the adversary's Adam ascent by hand. Both must give the same
losses, parameter gradients and adversarial sources to float rounding."""
from __future__ import annotations

import copy
import tempfile

import torch
import torch.nn as nn

from vpd.config import from_dict
from vpd.core import ComponentModel, find_sites, masks_from_sources
from vpd.method import causal_importances, minimality_loss, stochastic_recon
from vpd.train import DecompositionConfig, Trainer, build_ci_fn, loss_weights

CONFIG = from_dict(DecompositionConfig, {
    "steps": 10, "divergence": "kl", "bf16": False, "components_optimizer": {"grad_clip": None}, "delta_l2_coeff": 1.0, "faithfulness_warmup_steps": 0,
    "stochastic_routing": "all", "ci": {"kind": "mlp", "hidden": [4]}, "minimality": {"coeff": 1e-2, "p_end": None},
    "adversary": {"coeff": 0.5, "n_warmup": 2, "lr": 0.05, "lr_warmup_frac": 0.0}})


def textbook_kl(pred, target):
    logp_target, logp_pred = target.float().log_softmax(-1), pred.float().log_softmax(-1)
    return (logp_target.exp() * (logp_target - logp_pred)).sum(-1).mean()


def make_trainer(run_dir):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 8))
    sites, C = find_sites(net, {"0": 6, "2": 6})
    cm = ComponentModel(net, sites, C, lambda m, b: m(b))
    return Trainer(cm, build_ci_fn(cm, CONFIG.ci), CONFIG, [torch.rand(16, 8)], run_dir, progress=False)


def adversarial_loss(cm, batch, target_out, ci, deltas, sources):
    masks, delta_masks = {}, {}
    for n, r in sources.items():
        masks[n], delta_masks[n] = masks_from_sources(ci[n], r)
    return textbook_kl(cm.masked_forward(batch, masks, deltas, delta_masks), target_out)


def slow_step(cm, ci_fn, c, batch, sources, m, v, t, seed):
    "The losses, parameter gradients and updated sources of one step, computed the plain way."
    torch.manual_seed(seed)
    with torch.no_grad():
        target_out, inputs = cm.target_forward(batch)
    ci, upper = causal_importances(cm, ci_fn, inputs)
    deltas = cm.weight_deltas()
    losses = {"stochastic_recon": stochastic_recon(cm, batch, target_out, ci, deltas, textbook_kl, "all")}
    b1, b2 = c.adversary.betas
    lr = c.adversary.lr

    def ascend(grads):
        nonlocal t
        t += 1
        for n, g in grads.items():
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            step = lr * (m[n] / (1 - b1 ** t)) / ((v[n] / (1 - b2 ** t)).sqrt() + 1e-8)
            sources[n] = (sources[n] + step).clamp(0, 1)

    fixed_ci, fixed_deltas = {n: g.detach() for n, g in ci.items()}, {n: d.detach() for n, d in deltas.items()}
    for _ in range(c.adversary.n_warmup):
        leaves = {n: r.clone().requires_grad_(True) for n, r in sources.items()}
        loss = adversarial_loss(cm, batch, target_out, fixed_ci, fixed_deltas, leaves)
        ascend(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())))))
    leaves = {n: r.clone().requires_grad_(True) for n, r in sources.items()}
    losses["adversarial_recon"] = adversarial_loss(cm, batch, target_out, ci, deltas, leaves)
    source_grads = torch.autograd.grad(losses["adversarial_recon"], list(leaves.values()), retain_graph=True)
    losses["minimality"] = minimality_loss(upper, c.minimality.p_start, c.minimality.beta, c.minimality.eps)
    losses["delta_l2"] = sum(d.pow(2).sum() for d in deltas.values()) / sum(d.numel() for d in deltas.values())
    total = sum(loss_weights(c)[k] * v_ for k, v_ in losses.items())
    params = list(cm.components.parameters()) + list(ci_fn.parameters())
    grads = torch.autograd.grad(total, params)
    ascend(dict(zip(leaves, source_grads)))
    return {k: float(v_.detach()) for k, v_ in losses.items()}, grads, sources


def test_one_step_matches_the_slow_step():
    with tempfile.TemporaryDirectory() as d:
        tr = make_trainer(d)
        batch = torch.rand(16, 8)
        tr.train_step(batch)  # creates the adversary's sources and moves everything off its initial state
        adv = tr.adversary
        sources, m, v, t = (copy.deepcopy(x) for x in (adv.sources, adv.m, adv.v, adv.t))
        cm, ci_fn = copy.deepcopy(tr.cm), copy.deepcopy(tr.ci_fn)
        expected_losses, expected_grads, expected_sources = slow_step(cm, ci_fn, CONFIG, batch, sources, m, v, t, seed=7)
        torch.manual_seed(7)
        losses = tr.train_step(batch)
        for k, value in expected_losses.items():
            assert abs(float(losses[k]) - value) <= 1e-6 * max(1.0, abs(value)), (k, float(losses[k]), value)
        params = list(tr.cm.components.parameters()) + list(tr.ci_fn.parameters())
        for p, g in zip(params, expected_grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
        for n, r in expected_sources.items():
            torch.testing.assert_close(adv.sources[n], r, rtol=1e-5, atol=1e-6)
