"""Environments (host only): factory, dummy point mass and the driver that steps them."""

from envs.driver import Driver, Step
from envs.dummy import DUMMY_ENV_ID, register_dummy
from envs.factory import env_spec, make_env, make_single_env

register_dummy()

__all__ = ["DUMMY_ENV_ID", "Driver", "Step", "env_spec", "make_env", "make_single_env"]
