"""rlff-esc: roles, endpoints, personas, datasets and the command line of RLFF-ESC."""

__version__ = "0.1.0"
