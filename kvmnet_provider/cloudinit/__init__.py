"""cloud-init NoCloud for guests: the `cloud_init` property's rules and the `cidata` seed ISO.

Provider side only (PyYAML, pycdlib): the agent receives the finished seed's bytes.
"""

from .config import CloudInit, cloud_init_digest, normalise_cloud_init, seed_files
from .seed import build_seed

__all__ = ["CloudInit", "build_seed", "cloud_init_digest", "normalise_cloud_init", "seed_files"]
