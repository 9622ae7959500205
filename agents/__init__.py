"""Agents: planner, agent and the host-side replay buffer."""
