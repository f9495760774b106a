"""cloud-init NoCloud for guests: the `cloud_init` property's rules and the `cidata` seed ISO.

Provider side only (PyYAML, pycdlib): the agent receives the finished seed's bytes.
"""

from .config import CloudInit, cloud_init_digest, normalise_cloud_init, seed_files


def build_seed(files: dict[str, bytes]) -> bytes:
    """The seed ISO of `files` (see seed.py). pycdlib loads here, at the first seed: every
    program and provider process imports this package, few build a seed."""
    from .seed import build_seed as build

    return build(files)


__all__ = ["CloudInit", "build_seed", "cloud_init_digest", "normalise_cloud_init", "seed_files"]
