"""kvmnet's stack program: the model and guests come from stack config (see stacks/)."""

from kvmnet_provider.program import build

build()
