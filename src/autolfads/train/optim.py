"""Adam(W) and gradient clipping for parameters with a leading member axis.

Each member has its own learning rate, step count and moment estimates, so one member's update never
depends on another's, and PBT can copy a member's optimizer state along with its weights.
"""

from collections.abc import Sequence

import torch


def _member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def clip_member_grad_norms(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradients so their global L2 norm is at most max_norm; returns the norms (P,)."""
    for p in params:
        if p.grad is None:  # e.g. a kernel of size zero
            p.grad = torch.zeros_like(p)
    squared = sum(p.grad.square().flatten(1).sum(1) for p in params)
    norms = squared.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(_member_view(coef, p))
    return norms


class PopulationAdam:
    """torch.optim.Adam's update (AdamW's decoupled decay when weight_decay > 0), member by member.

    epsilon_hat: eps is TensorFlow's epsilon-hat (lfads-tf2), added to sqrt(v) before the bias correction
    rather than after it; that is PyTorch's update with eps / sqrt(1 - beta2^t) at step t, exactly.
    """

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        eps: float,
        weight_decay: float = 0.0,
        betas=(0.9, 0.999),
        epsilon_hat: bool = False,
    ):
        self.params = list(params)
        self.eps, self.weight_decay, self.betas, self.epsilon_hat = eps, weight_decay, betas, epsilon_hat
        members = self.params[0].shape[0]
        self.steps = torch.zeros(members, dtype=torch.float64, device=self.params[0].device)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """lr: (P,) learning rates; active: (P,) bool, members that update (others keep weights and state)."""
        beta1, beta2 = self.betas
        self.steps += active
        # Inactive members that never stepped get 0/0 here; torch.where below discards those values.
        step_size = (lr / (1 - beta1**self.steps)).to(self.params[0].dtype)
        bias_correction2_sqrt = (1 - beta2**self.steps).sqrt().to(self.params[0].dtype)
        eps = self.eps / bias_correction2_sqrt if self.epsilon_hat else torch.full_like(bias_correction2_sqrt, self.eps)
        for p, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq):
            on = _member_view(active, p)
            grad = torch.where(on, p.grad, 0.0)
            exp_avg.copy_(torch.where(on, exp_avg.lerp(grad, 1 - beta1), exp_avg))
            exp_avg_sq.copy_(torch.where(on, exp_avg_sq * beta2 + (1 - beta2) * grad * grad, exp_avg_sq))
            if self.weight_decay:
                p.mul_(torch.where(on, 1 - _member_view(lr.to(p.dtype), p) * self.weight_decay, 1.0))
            denom = exp_avg_sq.sqrt() / _member_view(bias_correction2_sqrt, p) + _member_view(eps, p)
            update = _member_view(step_size, p) * exp_avg / denom
            p.sub_(torch.where(on, update, 0.0))

    def state_dict(self) -> dict:
        return {
            "steps": self.steps.clone(),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"optimizer state has {len(state['exp_avg'])} tensors, model has {len(self.params)}")
        self.steps.copy_(state["steps"])
        for mine, theirs in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(theirs)
