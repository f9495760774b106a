"""The stack program: stack config in, each host's networks with their guests out.

`__main__.py` calls `build()`. It reads plain stack config only (namespace `kvmnet:`), so any
Pulumi project can use it; `kvmnet lab up` / `kvmnet demo up` and the tests write a lab host's
connection and the test image's paths into it.

One host: `kvmnet:host` and one network's keys at the stack's root:
  host              {host, port, user, known_hosts, host_key, private_key_path, python, sudo,
                    connect_timeout, allow_agent, firewall_backend} (secrets:
                    kvmnet:sshPrivateKey / kvmnet:sshPassword, or per host
                    kvmnet:sshCredentials, set with --secret)
  name              the network's resource name (net)
  model             isolated | routed | nat | bridged (nat)
  bridge            bridge name (br-in); subnet (10.0.1.0/24); gateway (routed/NAT: the
                    bridge's address, bridged: the guests' router; 10.0.1.254)
  uplink            NAT: limit the masquerade to this NIC; bridged: the NIC to bridge (eth0)
  guests            [{name, address?, mac?, tap?, memory_mib?, disks?, stop_timeout?,
                    kernel?, initrd?, cmdline?, baseImage?, baseFormat?, diskSizeGib?,
                    keepDisk?, cloudInit?: {userData, metaData?, networkConfig?}}]
                    (tap and mac default to ones made from the guest's name: guest_defaults.py;
                    with DHCP, `address` is the guest's static lease; none: one from the range;
                    a guest's own kernel/initrd win over guestImage, and its cmdline is used
                    as written, e.g. `root=/dev/vda console=ttyS0` for the Debian image;
                    baseImage is a qcow2/raw path on the host the guest boots from through its
                    own copy-on-write overlay; cloudInit a NoCloud seed, user-data secret)
  dhcp              routed/NAT: DHCP and DNS on the bridge (dnsmasq); default true there,
                    false (and not allowed) for isolated and bridged
  domain            the network's DNS domain (kvm.internal): guests are NAME.DOMAIN
  dhcpRange         [start, end] of the dynamic range (default: the subnet's upper half)
  portForwards      NAT: [{guest, guest_port, host_port, protocol?}] (DNAT from the host's port)
  bridgeAddresses   bridged: addresses for the bridge instead of the NIC's; rollbackSeconds
  verify            after up, a probe on the bridge checks the model's row (default true for
                    routed and NAT, false for isolated; bridged cannot yet); verifyTarget
                    ADDRESS or ADDRESS:PORT outside (default: the host's default gateway);
                    verifyOnRefresh: refresh runs the check again (default false)
Several hosts: `kvmnet:hosts` instead of `kvmnet:host` and the network keys:
  hosts             {NAME: {connection: {host, port, user, ...} (as kvmnet:host),
                            networks: [{name, model, ...: the network keys above}],
                            sshPrivateKey?, sshPassword? (this host's own secrets)}}
  NAME names the host in resource names (`NAME-NETWORK-...`) and outputs. Names that must be
  unique per host (bridges, taps, guests, port forwards, and the subnets of routed and NAT
  networks, which put their gateway on the host) are checked as the networks are declared
  (models/collisions.py), so a collision fails `preview`; the same names on two hosts are
  fine. Each host gets its own agent session; the engine runs the hosts' operations side by
  side, and a host that cannot be reached fails its own resources only (use `pulumi up
  --continue-on-error` to let the others' work finish in the same run).
Either way, for the whole stack:
  guestImage        {kernel, initrd}: paths on the host for direct boot (the guest gets
                    kvmnet.ip= / kvmnet.gw= / kvmnet.name= on its kernel command line;
                    kvmnet.ip=dhcp on a network with DHCP)
  guestStopTimeout  seconds to wait for a guest's ACPI power-down (default 10)
  accelerator       auto | kvm | tcg
  firewallBackend   auto | iptables | nftables: the hosts' firewall backend (default auto),
                    unless a host's connection names its own (firewall_backend)
Any other `kvmnet:` key fails preview naming it (keys.STACK_KEYS, which also lists the keys
the provider reads itself: the credentials and keepSessions). Every error is a ConfigError
naming the path as typed (`kvmnet:hosts.h1.networks[0].guests[1].address: ...`), one line.

A program of your own can read the same keys: connection_from_config (kvmnet:host) and
guest_image (kvmnet:guestImage).

Modules: hosts.py reads the hosts and their networks, checks.py checks each key,
networks.py makes a network's NetworkArgs, guests.py its GuestSpecs, outputs.py what the
stack exports, stack.py declares them; defaults.py holds what a missing key means.
"""

from .guests import guest_image
from .hosts import connection_from_config
from .stack import build

__all__ = ["build", "connection_from_config", "guest_image"]
