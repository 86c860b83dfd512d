"""The solves of benches/ode_core.rs, timed with torchdiffeq 0.2.5 (the reference's solver).

The E-NF dynamics are written here from the equations of the E-NF paper (FACTS.md section 1) in
the same formulation as the Rust crates, so that the comparison is between the solvers and the
runtimes, not between two different networks: `--layout flat` (the default, as the Rust crates
compute since 2026-11-30, ninth session) keeps node tensors as [batch * nodes, features] and edge tensors as
[batch * nodes * (nodes - 1), features] over the M - 1 neighbours of each node, so every linear
layer is one addmm, and the first layer reuses the edge vectors of the edge attributes;
`--layout dense` is the earlier formulation (all pairs as [batch, nodes, nodes, features] with
the diagonal masked). Both split the first edge layer into per-node products plus a broadcast add:

- solver overhead: dopri5 at rtol = atol = 1e-6 on y' = -y over [0, 1], 1,000 and 100,000 floats;
- an E-NF forward solve (Hutchinson trace, no parameter gradients) on 100 DW4 / LJ13 reference
  samples, dopri5 at 1e-4;
- an E-NF training step with backpropagation through the solver (odeint) and with the adjoint
  method (odeint_adjoint, as the reference trained).

With `--train-dw4 EPOCHS` it instead trains the PyTorch E-NF on the first 1,000 samples of
`train_split_DW4.npy` (batch 100, AdamW lr 5e-4, backpropagation through odeint) and prints the
NFE per training step and the NLL of every epoch: how the reference solver's work grows as the
flow learns, to set beside metrics.jsonl of a Rust run.

Run it through `cargo xtask bench-torchdiffeq`, which installs torchdiffeq 0.2.5 and numpy next to
the project's libtorch wheel; it prints one JSON object per case (median seconds, NFE).
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint


class EquivariantConv(nn.Module):
    """One EGCL with eq. 9 of the E-NF paper (C = 1), attention and tanh-bounded coordinates."""

    def __init__(self, hidden, coords_range):
        super().__init__()
        fan_in = 2 * hidden + 2  # h_i, h_j, squared distance, edge attribute
        self.edge_src = nn.Linear(hidden, hidden)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_scalars = nn.Linear(2, hidden, bias=False)
        bound = 1.0 / math.sqrt(fan_in)
        for lin in (self.edge_src, self.edge_dst, self.edge_scalars):
            nn.init.uniform_(lin.weight, -bound, bound)
        nn.init.uniform_(self.edge_src.bias, -bound, bound)
        self.edge_out = nn.Linear(hidden, hidden)
        self.attention = nn.Linear(hidden, 1)
        self.coord_in = nn.Linear(hidden, hidden)
        self.coord_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_out.weight, gain=0.001)
        self.node_in = nn.Linear(2 * hidden, hidden)
        self.node_out = nn.Linear(hidden, hidden)
        self.coords_range = coords_range

    def forward_flat(self, h, x, edge_attr, neighbours, geometry=None):
        """h [B*M, H], x [B, M, n], edge_attr [E, 1], neighbours [E] (row of node j for edge i-j),
        geometry: (diff [E, n], radial [E, 1]) of x if already computed."""
        b, m, n = x.shape
        k, hidden = m - 1, h.shape[1]
        diff, radial = geometry if geometry is not None else edge_geometry(x, neighbours)
        dst = self.edge_dst(h).index_select(0, neighbours).view(b * m, k, hidden)
        base = (dst + self.edge_src(h).unsqueeze(1)).view(-1, hidden)
        pre = torch.addmm(base, torch.cat([radial, edge_attr], -1), self.edge_scalars.weight.t())
        msg = nn.functional.silu(self.edge_out(nn.functional.silu(pre)))
        msg = msg * torch.sigmoid(self.attention(msg))
        phi = torch.tanh(self.coord_out(nn.functional.silu(self.coord_in(msg)))) * self.coords_range
        shift = (diff * (phi / (torch.sqrt(radial + 1e-8) + 1.0))).view(b * m, k, n).sum(1)
        x = x + shift.view(b, m, n)
        agg = msg.view(b * m, k, hidden).sum(1)
        h = h + self.node_out(nn.functional.silu(self.node_in(torch.cat([h, agg], -1))))
        return h, x

    def forward(self, h, x, edge_attr, off_diagonal):
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # [B, M, M, n]: x_i - x_j
        radial = diff.square().sum(-1, keepdim=True)  # [B, M, M, 1]
        pre = (
            self.edge_scalars(torch.cat([radial, edge_attr], -1))
            + self.edge_src(h).unsqueeze(2)
            + self.edge_dst(h).unsqueeze(1)
        )
        m = nn.functional.silu(self.edge_out(nn.functional.silu(pre)))
        m = m * torch.sigmoid(self.attention(m)) * off_diagonal
        phi = torch.tanh(self.coord_out(nn.functional.silu(self.coord_in(m)))) * self.coords_range
        x = x + (diff * phi / (torch.sqrt(radial + 1e-8) + 1.0)).sum(2)
        agg = m.sum(2)
        h = h + self.node_out(nn.functional.silu(self.node_in(torch.cat([h, agg], -1))))
        return h, x


def edge_geometry(x, neighbours):
    """x_i - x_j [E, n] and ||x_i - x_j||^2 [E, 1] over the flat neighbour layout."""
    b, m, n = x.shape
    xf = x.reshape(b * m, n)
    xj = xf.index_select(0, neighbours).view(b * m, m - 1, n)
    diff = (xf.unsqueeze(1) - xj).view(-1, n)
    return diff, diff.square().sum(-1, keepdim=True)


def flat_neighbours(b, m):
    """[b * m * (m - 1)]: for edge (i, j) of graph g, the row g * m + j of the flattened nodes."""
    per_graph = torch.tensor([j for i in range(m) for j in range(m) if j != i], dtype=torch.long)
    return (torch.arange(b).unsqueeze(1) * m + per_graph.unsqueeze(0)).flatten()


class EnfDynamics(nn.Module):
    """The E-NF velocity: time as the node feature, squared distances as edge attributes."""

    def __init__(self, hidden=32, n_layers=3, coords_range=15.0, layout="flat"):
        super().__init__()
        self.embedding = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(
            [EquivariantConv(hidden, coords_range / n_layers) for _ in range(n_layers)]
        )
        self.layout = layout
        self.neighbours = {}

    def forward(self, t, x):
        if self.layout == "flat":
            return self.forward_flat(t, x)
        b, m, _ = x.shape
        off_diagonal = (1.0 - torch.eye(m, dtype=x.dtype)).view(1, m, m, 1)
        h = self.embedding(t.expand(b, m, 1).to(x.dtype))
        edge_attr = (x.unsqueeze(2) - x.unsqueeze(1)).square().sum(-1, keepdim=True)
        x_out = x
        for layer in self.layers:
            h, x_out = layer(h, x_out, edge_attr, off_diagonal)
        v = x_out - x
        return v - v.mean(1, keepdim=True)

    def forward_flat(self, t, x):
        b, m, _ = x.shape
        key = (b, m, x.device)
        if key not in self.neighbours:
            self.neighbours[key] = flat_neighbours(b, m).to(x.device)
        neighbours = self.neighbours[key]
        h = self.embedding(t.expand(b * m, 1).to(x.dtype))
        geometry = edge_geometry(x, neighbours)
        edge_attr = geometry[1]
        x_out = x
        for l, layer in enumerate(self.layers):
            h, x_out = layer.forward_flat(h, x_out, edge_attr, neighbours, geometry if l == 0 else None)
        v = x_out - x
        return v - v.mean(1, keepdim=True)


class DensityFunc(nn.Module):
    """d[x, log det]/dt = [v, eps^T dv/dx eps] with eps fixed for the solve (FFJORD)."""

    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics
        self.eps = None
        self.nfe = 0

    def forward(self, t, state):
        x, _ = state
        self.nfe += 1
        with torch.set_grad_enabled(True):
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.dynamics(t, x)
            (e_dvdx,) = torch.autograd.grad(v, x, self.eps, create_graph=True)
            trace = (e_dvdx * self.eps).sum((1, 2))
        return v, trace


def log_prior(z):
    _, m, n = z.shape
    return -0.5 * z.square().sum((1, 2)) - 0.5 * (m - 1) * n * math.log(2 * math.pi)


def log_likelihood(func, x, adjoint):
    func.eps = torch.randint(0, 2, x.shape).to(x) * 2 - 1
    state = (x, torch.zeros(x.shape[0], dtype=x.dtype))
    t = torch.tensor([0.0, 1.0])
    solve = odeint_adjoint if adjoint else odeint
    z, log_det = solve(func, state, t, method="dopri5", rtol=1e-4, atol=1e-4)
    return log_prior(z[-1]) + log_det[-1]


def timed(fn, repeats):
    fn()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def report(case, seconds, nfe, args):
    record = {"case": case, "median_s": seconds, "nfe": nfe, "threads": args.threads}
    print(json.dumps(record | {"layout": args.layout}), flush=True)


def train_dw4(reference_dir, epochs, layout):
    data = np.load(reference_dir / "train_split_DW4.npy")[:1000].astype(np.float32)
    x_all = torch.from_numpy(data.reshape(-1, 4, 2))
    x_all = x_all - x_all.mean(1, keepdim=True)
    torch.manual_seed(0)
    func = DensityFunc(EnfDynamics(layout=layout))
    opt = torch.optim.AdamW(func.parameters(), lr=5e-4, weight_decay=1e-12, amsgrad=True)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x_all))
        nfes, nlls, start = [], [], time.perf_counter()
        for i in range(0, len(x_all), 100):
            func.nfe = 0
            opt.zero_grad()
            loss = -log_likelihood(func, x_all[order[i : i + 100]], adjoint=False).mean()
            loss.backward()
            opt.step()
            nfes.append(func.nfe)
            nlls.append(loss.item())
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "train_nll": statistics.mean(nlls),
                    "train_nfe_per_step": statistics.mean(nfes),
                    "seconds": time.perf_counter() - start,
                }
            ),
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-dw4", type=int, default=0, metavar="EPOCHS")
    parser.add_argument("--layout", choices=("flat", "dense"), default="flat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.train_dw4 > 0:
        train_dw4(args.reference_dir, args.train_dw4, args.layout)
        return

    for n in (1_000, 100_000):
        y0 = torch.ones(n)
        calls = [0]

        def decay(t, y):
            calls[0] += 1
            return -y

        def solve():
            calls[0] = 0
            with torch.no_grad():
                odeint(decay, y0, torch.tensor([0.0, 1.0]), method="dopri5", rtol=1e-6, atol=1e-6)

        seconds = timed(solve, args.repeats * 5)
        report(f"ode_overhead/dopri5_decay_{n}_floats", seconds, calls[0], args)

    for name, file, shape in (
        ("dw4", "train_split_DW4.npy", (4, 2)),
        ("lj13", "val_split_LJ13-1000.npy", (13, 3)),
    ):
        data = np.load(args.reference_dir / file)[:100].astype(np.float32)
        x = torch.from_numpy(data.reshape(100, *shape))
        x = x - x.mean(1, keepdim=True)
        torch.manual_seed(0)
        func = DensityFunc(EnfDynamics(layout=args.layout))
        initial = {k: v.clone() for k, v in func.state_dict().items()}
        opt = torch.optim.AdamW(func.parameters(), lr=5e-4, weight_decay=1e-12, amsgrad=True)

        def forward():
            func.nfe = 0
            with torch.no_grad():
                log_likelihood(func, x, adjoint=False)

        seconds = timed(forward, args.repeats)
        report(f"enf/{name}_forward_solve_batch100", seconds, func.nfe, args)

        for method, adjoint in (("Backprop", False), ("Adjoint", True)):

            def step():
                func.load_state_dict(initial)
                func.nfe = 0
                opt.zero_grad()
                loss = -log_likelihood(func, x, adjoint).mean()
                loss.backward()
                opt.step()

            seconds = timed(step, args.repeats)
            report(f"enf/{name}_training_step_batch100_{method}", seconds, func.nfe, args)


if __name__ == "__main__":
    main()
