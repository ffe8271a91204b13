"""Agents: batched data-collection policies (and, later, planners and the MPC agent)."""

from noether_control.agents.policies import (
    OUPolicy,
    OUPolicyConfig,
    Policy,
    SB3Policy,
    SB3PolicyConfig,
    UniformPolicy,
    UniformPolicyConfig,
    make_policy,
    policy_config,
)

__all__ = [
    "OUPolicy",
    "OUPolicyConfig",
    "Policy",
    "SB3Policy",
    "SB3PolicyConfig",
    "UniformPolicy",
    "UniformPolicyConfig",
    "make_policy",
    "policy_config",
]
