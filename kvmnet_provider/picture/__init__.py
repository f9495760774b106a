"""A picture of a kvmnet stack: its hosts, bridges, taps, guests, uplinks, port forwards and
DHCP, drawn from the stack's state (`pulumi stack export`) as SVG or as a tree for terminals,
and, when asked, marked where the hosts' live reads differ from the state (drift).

state.py reads the export into a Picture; live.py reads each resource on its host the way
`pulumi refresh` does (the provider's own host_read) and marks what is gone or different;
text.py and svg.py draw; cli.py is the `kvmnet-picture` command.
"""

from .live import mark_drift, read_live
from .state import Picture, picture_from_export
from .svg import render_svg
from .text import render_text

__all__ = [
    "Picture",
    "mark_drift",
    "picture_from_export",
    "read_live",
    "render_svg",
    "render_text",
]
