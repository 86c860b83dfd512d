"""Independent check of a trained simple-dynamics flow's negative log-likelihood.

Re-implements the simple-dynamics velocity (minus the gradient of a pair potential over normalised
RBF kernels, FACTS.md section 3) and the flow's likelihood in PyTorch, with the trace of the
Jacobian by autograd column by column and torchdiffeq's dopri5, in float64, reading the weights
from a run's safetensors checkpoint; no enf-rs code is involved. Compare its output with

    cargo xtask enf evaluate --run-dir RUN --limit N --tol 1e-7

on the same samples (the first N of the last 1,000 of the .npy file, which is the test split of a
file imported with `cargo xtask enf import-npy`).

Usage (torch and torchdiffeq from the per-user cache that `cargo xtask bench-torchdiffeq` fills):

    PYTHONPATH=~/.cache/enf-rs/torch-2.13.0:~/.cache/enf-rs/torchdiffeq-0.2.5 \
        python3 benches/torchdiffeq/crosscheck_simple_dynamics.py RUN/best.safetensors SAMPLES.npy \
        --particles 13 --dims 3 --n 100
"""

import argparse
import json
import math
import struct

import numpy as np
import torch
from torchdiffeq import odeint

DISTANCE_EPS = 1e-6  # under the square root, as in enf-rs and the reference


def read_safetensors(path):
    """Every tensor of a safetensors file, as float64 torch tensors."""
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = {"F32": np.float32, "F64": np.float64}[info["dtype"]]
        array = np.frombuffer(data[8 + n + start : 8 + n + end], dtype=dtype)
        tensors[name] = torch.tensor(array.reshape(info["shape"]).astype(np.float64))
    return tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("samples", help=".npy array [N, particles * dims]")
    parser.add_argument("--particles", type=int, default=13)
    parser.add_argument("--dims", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--width", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    m, n = args.particles, args.dims

    w = read_safetensors(args.checkpoint)
    n_layers = sum(1 for k in w if k.startswith("dynamics.potential.layers.") and k.endswith(".weight"))
    layers = [
        (w[f"dynamics.potential.layers.{i}.weight"], w[f"dynamics.potential.layers.{i}.bias"])
        for i in range(n_layers)
    ]
    centres = w["dynamics.rbf_centres"]

    def pair_energy(d):
        z = torch.softmax(-((d.unsqueeze(-1) - centres) ** 2) / args.width**2, -1)
        for i, (weight, bias) in enumerate(layers):
            z = z @ weight.T + bias
            if i < len(layers) - 1:
                z = torch.tanh(z)
        return z.squeeze(-1)

    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    src = torch.tensor([i for i, _ in pairs])
    dst = torch.tensor([j for _, j in pairs])

    def potential(x):
        r = x[:, src] - x[:, dst]
        d = (r.pow(2).sum(-1) + DISTANCE_EPS).sqrt()
        return pair_energy(d).sum(-1)

    def rhs(t, state):
        x, _ = state
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = -torch.autograd.grad(potential(x).sum(), x, create_graph=True)[0]
            v = v - v.mean(1, keepdim=True)
            div = torch.zeros(x.shape[0])
            for i in range(m):
                for k in range(n):
                    div = div + torch.autograd.grad(v[:, i, k].sum(), x, retain_graph=True)[0][:, i, k]
        return v.detach(), div.detach()

    x = torch.tensor(np.load(args.samples).astype(np.float64)).view(-1, m, n)[-1000:][: args.n]
    x = x - x.mean(1, keepdim=True)
    times = torch.tensor([0.0, 1.0])
    zs, integrals = odeint(rhs, (x, torch.zeros(x.shape[0])), times, rtol=1e-7, atol=1e-7, method="dopri5")
    z, integral = zs[-1], integrals[-1]
    dof = (m - 1) * n  # the centre-of-mass-free Gaussian prior
    log_pz = -0.5 * z.pow(2).sum((1, 2)) - dof / 2 * math.log(2 * math.pi)
    nll = -(log_pz + integral)
    print(f"NLL over {x.shape[0]} samples: {nll.mean():.4f} +- {nll.std() / math.sqrt(len(nll)):.4f} nats")


if __name__ == "__main__":
    main()
