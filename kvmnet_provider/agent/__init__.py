"""The host agent: code that runs ON the target host.

Only this subpackage imports pyroute2 and python-iptables. The provider ships it, with the
pure `spec` package it checks requests with, over SSH as the tree kvmnet_agent/{agent,spec}
(connection/bootstrap.py) and runs it with the host's Python; every module uses relative
imports so the tree works under that name. Nothing here imports models, resources or
connection (tests/test_layout.py).
"""
