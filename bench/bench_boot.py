#!/usr/bin/env python3
"""Benchmark: boot of one guest on a NAT network with DHCP, from `pulumi up` start to the
guest's first DHCP lease and to the guest saying it is done (cloud-init's "finished" line for
the Debian image, KVMNET-GUEST-READY for the test image), for the busybox test image
(baseline, measured in the same run) and the Debian bookworm image (scripts/build-debian-image,
booted through an overlay with a cloud-init seed).

Run as root from the repo root:
    .venv/bin/python bench/bench_boot.py [--rounds 1] [--test-rounds 2] [--accel tcg]

It brings up its own lab (one host, a unique name "kq<hex>") and always takes it down. Not a
test: it asserts nothing about wall time; it fails only when a step fails.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_dhcp import netns_dir
from bench_nat import load, own_lab
from kvmnet_lab.hostconfig import host_props
from kvmnet_lab.lab import HostStatus
from kvmnet_lab.testing.debian_image import (
    CLOUD_INIT_FINISHED,
    DEBIAN_CMDLINE,
    LOGIN_PROMPT,
    debian_image_dir,
)
from kvmnet_lab.testing.guest import guest_image_dir
from kvmnet_lab.testing.stack import STACK_PROGRAM, TestStack
from marks import timed_up

BRIDGE = "br-kb"
GUEST = "kbg1"
MAC = "52:54:00:00:0b:01"
READY = b"KVMNET-GUEST-READY"
BOOT_TIMEOUT = 900.0


@dataclass
class Variant:
    name: str
    config: dict[str, Any]
    done: str  # what "done" means on its console
    rounds: list[dict[str, float]] = field(default_factory=list)


def network_config(h: HostStatus, accel: str) -> dict[str, Any]:
    return {
        "kvmnet:host": host_props(h, sys.executable),
        "kvmnet:model": "nat",
        "kvmnet:bridge": BRIDGE,
        "kvmnet:subnet": "10.0.1.0/24",
        "kvmnet:gateway": "10.0.1.254",
        "kvmnet:accelerator": accel,
        "kvmnet:guestStopTimeout": 5,
    }


def test_image_variant(h: HostStatus, accel: str) -> Variant:
    image = guest_image_dir()
    config = network_config(h, accel)
    config["kvmnet:guestImage"] = {
        "kernel": str(image / "vmlinuz"),
        "initrd": str(image / "initrd.img"),
    }
    config["kvmnet:guests"] = [{"name": GUEST, "address": "10.0.1.11", "mac": MAC}]
    return Variant("test image (busybox, udhcpc)", config, "KVMNET-GUEST-READY")


def debian_variant(h: HostStatus, accel: str, public_key: str) -> Variant:
    image = debian_image_dir()
    config = network_config(h, accel)
    config["kvmnet:guests"] = [
        {
            "name": GUEST,
            "address": "10.0.1.11",
            "mac": MAC,
            "memory_mib": 512,
            "kernel": str(image / "vmlinuz"),
            "initrd": str(image / "initrd.img"),
            "cmdline": DEBIAN_CMDLINE,
            "baseImage": str(image / "disk.qcow2"),
            "cloudInit": {
                "userData": {
                    "hostname": GUEST,
                    "users": [{"name": "user", "ssh_authorized_keys": [public_key]}],
                }
            },
        }
    ]
    return Variant("Debian bookworm (cloud-init)", config, "cloud-init finished")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def watch(root: Path, t0: float, seen: dict[str, float], stop: threading.Event) -> None:
    """Note when the lease file first holds the guest's MAC, the console shows a login prompt,
    and the console says the guest is done (READY or cloud-init's finished line)."""
    lease = root / "dhcp" / BRIDGE / "leases"
    console = root / "guests" / GUEST / "console.log"
    while not stop.is_set():
        now = time.monotonic() - t0
        if "lease" not in seen and MAC.encode() in _read(lease):
            seen["lease"] = now
        text = _read(console)
        if "login" not in seen and LOGIN_PROMPT.search(text.decode(errors="replace")):
            seen["login"] = now
        if "done" not in seen and (
            READY in text or CLOUD_INIT_FINISHED.search(text.decode(errors="replace"))
        ):
            seen["done"] = now
        time.sleep(0.1)


def boot_round(stack: TestStack, root: Path) -> dict[str, float]:
    return timed_up(
        stack,
        functools.partial(watch, root),
        lambda seen: "done" in seen and "lease" in seen,
        BOOT_TIMEOUT,
        "no lease or not done",
        poll=0.2,
    )


def run_variant(variant: Variant, rounds: int, root: Path, work: Path) -> None:
    for r in range(rounds):
        stack = TestStack(work / f"boot-{len(variant.rounds)}-{r}", STACK_PROGRAM, project="kbboot")
        stack.config_values(variant.config)
        try:
            seen = boot_round(stack, root)
        finally:
            stack.remove()
        variant.rounds.append(seen)
        shown = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(seen.items(), key=lambda x: x[1]))
        print(f"  {variant.name} round {r + 1}: {shown}", flush=True)


def median(variant: Variant, key: str) -> float:
    values = [r[key] for r in variant.rounds if key in r]
    return statistics.median(values) if values else float("nan")


def report(base: Variant, variants: list[Variant], accel: str) -> str:
    baseline = median(base, "lease")
    out = [
        f"One guest on a NAT network with DHCP, accelerator {accel}; seconds from `pulumi up` "
        f"start (median of the rounds); baseline: the test image's first lease "
        f"({baseline:.1f} s)",
        f"{'image':<32}{'rounds':>7}{'up returned':>13}{'first lease':>13}{'/ base':>8}"
        f"{'login prompt':>14}{'done':>8}{'/ base':>8}  done means",
    ]
    for v in variants:
        up, lease, login, done = (median(v, k) for k in ("up", "lease", "login", "done"))
        shown = "-" if math.isnan(login) else f"{login:.1f}s"
        out.append(
            f"{v.name:<32}{len(v.rounds):>7}{up:>12.1f}s{lease:>12.1f}s{lease / baseline:>8.2f}"
            f"{shown:>14}{done:>7.1f}s{done / baseline:>8.2f}  {v.done}"
        )
    out += [
        "first lease: the guest's MAC in dnsmasq's lease file; login prompt: a getty on the",
        "serial console (-: not seen before done; the test image has none); done: the line",
        "named, on the console. The machine is shared: see the load lines.",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="boots of the Debian image")
    parser.add_argument("--test-rounds", type=int, default=2, help="boots of the test image")
    parser.add_argument("--accel", default="tcg", choices=("tcg", "kvm", "auto"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_boot: needs root (the lab)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kvmnet-bench-boot-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    begin = time.monotonic()
    print(f"load at start: {load()}", flush=True)
    build = time.monotonic()
    debian_image_dir()  # built (or found) before the clock of any boot starts
    print(f"Debian image ready in {time.monotonic() - build:.0f} s", flush=True)
    try:
        with own_lab(work / "lab", prefix="kq") as (lab, h):
            print(f"lab {lab.name}: host {h.address} ({h.namespace})", flush=True)
            root = netns_dir(lab, h)
            base = test_image_variant(h, args.accel)
            debian = debian_variant(h, args.accel, key.with_suffix(".pub").read_text().strip())
            run_variant(base, args.test_rounds, root, work)
            run_variant(debian, args.rounds, root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(base, [base, debian], args.accel))
    print(f"load at end: {load()}   (total {time.monotonic() - begin:.0f} s)")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
