"""The host agent: code that runs ON the target host.

Only this subpackage imports pyroute2 and python-iptables. The controller ships these files
over SSH and runs them with the host's Python; every module uses relative imports so the
package works under whatever name the bootstrap gives it. `validate` and `errors` are pure
and are imported by the controller too.
"""
