"""kvmnet: a Pulumi dynamic provider for KVM host networking over SSH."""
