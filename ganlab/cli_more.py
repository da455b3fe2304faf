"""Subcommands beyond ``train``: evaluate, prune, sweep, analyze, demo."""

REGISTER = []
