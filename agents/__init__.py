"""Agents: policies that act in the environments (collection policies, planners, the MPC agent,
SB3 agents in the world model) and the commands that run them (``collect``, ``plan``,
``plan_table``, ``rl``, ``mbrl``)."""

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
