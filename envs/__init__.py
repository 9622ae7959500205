"""Environments (host only): factory, dummy point mass, physical shifts and the driver."""

from envs.driver import Driver, Step
from envs.dummy import DUMMY_ENV_ID, register_dummy
from envs.factory import env_spec, make_env, make_single_env
from envs.shifts import (
    MINOR_SHIFTS,
    SEVERE_SHIFTS,
    SHIFT_KINDS,
    ShiftSpec,
    ShiftWrapper,
    find_shift_wrappers,
    parse_shift,
)

register_dummy()

__all__ = [
    "DUMMY_ENV_ID",
    "MINOR_SHIFTS",
    "SEVERE_SHIFTS",
    "SHIFT_KINDS",
    "Driver",
    "ShiftSpec",
    "ShiftWrapper",
    "Step",
    "env_spec",
    "find_shift_wrappers",
    "make_env",
    "make_single_env",
    "parse_shift",
]
