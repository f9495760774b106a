"""kvmnet's lab: everything around the product that a developer of kvmnet uses.

- `lab`: fake remote KVM hosts made of network namespaces, each with its own sshd;
- `hostconfig`: a lab host as HostSettings and as stack config;
- `testing`: the test guest (QEMU argv through the agent's builder, start/stop, its serial
  console), host snapshots, throwaway Pulumi stacks;
- `probe`: what a model lets through, observed from inside guests;
- `demo`, `envcmd`, `cli`: the `kvmnet` command; `toolchain`: where the engine lives and how
  to run it offline; `terminal`: a guest's console on this terminal.

It imports kvmnet_provider; kvmnet_provider never imports it (tests/test_layout.py).
"""
