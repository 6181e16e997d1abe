"""HesScale through ``nn.LSTM``: the diagonal recursion on the unrolled cell (docs/algorithms/hesscale.md).

PyTorch's cell, per layer and time step (gates in the order i, f, g, o)::

    z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i, f, o = sigmoid(z_i, z_f, z_o),   g = tanh(z_g)
    c_t = f ∘ c_{t-1} + i ∘ g,          h_t = o ∘ tanh(c_t)

The rule applies HesScale's principle to every operation of this graph: elementwise maps exactly
(``D_in = f'² D_out + f'' g_out``), linear maps with ``(W∘W)^T``, each factor of a product as a linear
map of that factor (``D(f) = c_{t-1}² D(c_t)``, ...), and at every branch (``h_t`` feeding the output and
step t+1, ``c_t`` feeding ``h_t`` and step t+1, ``z`` sharing ``W`` over time) the sum of the branches'
diagonals, dropping cross terms between branches. It is exact for one time step from a given (or zero)
state into a loss with a diagonal output Hessian; otherwise it is the same approximation as HesScale's
for a chain of layers plus the dropped branch and time cross terms. The exact gradients the second-order
terms need are recomputed by back-propagation through time inside the rule (HesScaleGN needs none).
Cost: one extra forward pass of the LSTM and about two backward passes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LSTMRule"]


def _get(tree, *path):
    for key in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


class LSTMRule:
    """HesScale rule of ``nn.LSTM`` (unidirectional, any number of layers, no projections)."""

    name = "LSTM"

    def check(self, module: nn.Module) -> str | None:
        """Bidirectional and projected LSTMs, and inter-layer dropout in training, are not supported."""
        if module.bidirectional:
            return "bidirectional=True (only unidirectional LSTMs have a rule)"
        if module.proj_size:
            return "proj_size > 0"
        return None

    def needs_g(self, module: nn.Module, gn: bool) -> bool:
        """HesScale needs the exact gradients at the outputs; HesScaleGN none."""
        return not gn

    def g_outputs(self, output):
        """``output``, ``h_n`` and ``c_n``."""
        out, (h_n, c_n) = output
        return [((0,), out), ((1, 0), h_n), ((1, 1), c_n)]

    def save(self, module, inputs, output):
        """Input, initial state and their ``requires_grad`` flags; refuses inter-layer dropout."""
        if module.training and module.dropout > 0 and module.num_layers > 1:
            raise RuntimeError(
                "HesScale: nn.LSTM with dropout > 0 in training mode is not supported (the inter-layer "
                "dropout mask is not observable); set dropout=0 or call .eval() on it"
            )
        x = inputs[0]
        hx = inputs[1] if len(inputs) > 1 else None
        state = None if hx is None else (hx[0].detach(), hx[1].detach())
        need_hx = hx is not None and (hx[0].requires_grad or hx[1].requires_grad)
        return (x.detach(), state, x.requires_grad, need_hx)

    def backward(self, module, saved, d_out, g_out, ctx):
        """Diagonal (and, for HesScale, exact-gradient) recursion backwards through layers and time."""
        x, state, need_x, need_hx = saved
        gn = ctx.gn
        batched = x.dim() == 3
        seq = x if batched else x.unsqueeze(1)
        if batched and module.batch_first:
            seq = seq.transpose(0, 1)
        steps, n = seq.shape[0], seq.shape[1]
        hidden, layers = module.hidden_size, module.num_layers
        dtype, device = x.dtype, x.device
        if state is None:
            h0 = torch.zeros(layers, n, hidden, dtype=dtype, device=device)
            c0 = torch.zeros_like(h0)
        else:
            h0, c0 = (s if batched else s.unsqueeze(1) for s in state)

        def as_time_major(t: Tensor | None) -> Tensor:
            if t is None:
                return torch.zeros(steps, n, hidden, dtype=dtype, device=device)
            t = t if batched else t.unsqueeze(1)
            return t.transpose(0, 1) if (batched and module.batch_first) else t

        def as_state(t: Tensor | None) -> Tensor:
            if t is None:
                return torch.zeros(layers, n, hidden, dtype=dtype, device=device)
            return t if batched else t.unsqueeze(1)

        d_seq = as_time_major(_get(d_out, 0))
        d_hn, d_cn = as_state(_get(d_out, 1, 0)), as_state(_get(d_out, 1, 1))
        if not gn:
            g_seq = as_time_major(_get(g_out, 0))
            g_hn, g_cn = as_state(_get(g_out, 1, 0)), as_state(_get(g_out, 1, 1))

        # forward recomputation, layer by layer
        inputs, caches = [seq], []
        for layer in range(layers):
            w_ih = getattr(module, f"weight_ih_l{layer}").detach()
            w_hh = getattr(module, f"weight_hh_l{layer}").detach()
            pre_x = inputs[-1].matmul(w_ih.t())
            if module.bias:
                pre_x = (
                    pre_x
                    + getattr(module, f"bias_ih_l{layer}").detach()
                    + getattr(module, f"bias_hh_l{layer}").detach()
                )
            h, c = h0[layer], c0[layer]
            hs_prev, cs_prev, gates_all, hs = [], [], [], []
            for t in range(steps):
                z = pre_x[t] + h.matmul(w_hh.t())
                zi, zf, zg, zo = z.chunk(4, dim=-1)
                gates = (torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo))
                hs_prev.append(h)
                cs_prev.append(c)
                c = gates[1] * c + gates[0] * gates[2]
                h = gates[3] * torch.tanh(c)
                gates_all.append((*gates, c))
                hs.append(h)
            caches.append((torch.stack(hs_prev), torch.stack(cs_prev), gates_all))
            inputs.append(torch.stack(hs))

        d_h0, d_c0 = [], []
        for layer in reversed(range(layers)):
            w_ih = getattr(module, f"weight_ih_l{layer}")
            w_hh = getattr(module, f"weight_hh_l{layer}")
            wd_hh = w_hh.detach()
            wsq_hh = wd_hh * wd_hh
            hs_prev, cs_prev, gates_all = caches[layer]
            dh, dc = d_hn[layer], d_cn[layer]
            if not gn:
                gh, gc = g_hn[layer], g_cn[layer]
            d_pre, g_pre = [None] * steps, [None] * steps
            for t in reversed(range(steps)):
                i, f, g, o, c = gates_all[t]
                tc = torch.tanh(c)
                dtc = 1 - tc * tc
                dh_t = dh + d_seq[t]
                d_o = tc * tc * dh_t
                d_c = dc + dtc * dtc * (o * o) * dh_t
                if not gn:
                    gh_t = gh + g_seq[t]
                    g_tc = gh_t * o
                    g_o = gh_t * tc
                    d_c = d_c - 2 * tc * dtc * g_tc
                    g_c = gc + g_tc * dtc
                cp = cs_prev[t]
                d_i, d_f, d_g = g * g * d_c, cp * cp * d_c, i * i * d_c
                si, sf, so = i * (1 - i), f * (1 - f), o * (1 - o)
                tg = 1 - g * g
                dz = torch.cat((si * si * d_i, sf * sf * d_f, tg * tg * d_g, so * so * d_o), dim=-1)
                if not gn:
                    g_i, g_f, g_g = g_c * g, g_c * cp, g_c * i
                    dz = dz + torch.cat(
                        (
                            si * (1 - 2 * i) * g_i,
                            sf * (1 - 2 * f) * g_f,
                            -2 * g * tg * g_g,
                            so * (1 - 2 * o) * g_o,
                        ),
                        dim=-1,
                    )
                    gz = torch.cat((si * g_i, sf * g_f, tg * g_g, so * g_o), dim=-1)
                    g_pre[t] = gz
                    gh = gz.matmul(wd_hh)
                    gc = g_c * f
                d_pre[t] = dz
                dh = dz.matmul(wsq_hh)
                dc = f * f * d_c
            d_h0.append(dh)
            d_c0.append(dc)
            dz_all = torch.stack(d_pre)  # (T, N, 4H)
            dz_flat = dz_all.reshape(-1, dz_all.shape[-1])
            inp = inputs[layer]
            if w_ih.requires_grad:
                ctx.acc(w_ih, dz_flat.t().mm((inp * inp).reshape(-1, inp.shape[-1])))
            if w_hh.requires_grad:
                ctx.acc(w_hh, dz_flat.t().mm((hs_prev * hs_prev).reshape(-1, hidden)))
            if module.bias:
                for name in (f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
                    b = getattr(module, name)
                    if b.requires_grad:
                        ctx.acc(b, dz_flat.sum(0))
            if layer > 0 or need_x:
                wd_ih = w_ih.detach()
                d_seq = dz_all.matmul(wd_ih * wd_ih)
                if not gn and layer > 0:
                    g_seq = torch.stack(g_pre).matmul(wd_ih)
        result = []
        if need_x:
            d_x = d_seq.transpose(0, 1) if (batched and module.batch_first) else d_seq
            result.append((0, d_x if batched else d_x.squeeze(1)))
        if need_hx:
            d_h0_t = torch.stack(d_h0[::-1])
            d_c0_t = torch.stack(d_c0[::-1])
            if not batched:
                d_h0_t, d_c0_t = d_h0_t.squeeze(1), d_c0_t.squeeze(1)
            result.append(((1, 0), d_h0_t))
            result.append(((1, 1), d_c0_t))
        return result
