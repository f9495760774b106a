"""What the provider checks at `check` and the host agent checks again, in one place.

Pure standard library, no imports outside this subpackage: the resources import it in the
provider process, and it is shipped to the host beside the agent (connection/bootstrap.py).

- `validate`: names, CIDRs, MACs, owners, numbers (one rule per function, InvalidInput);
- `family`: an address family (IPv4, IPv6) as the validators, rule plans and backends take it;
- `guest`: a QEMU guest's spec (fields, their rules, the rules over several fields);
- `wire`: the shapes of the agent protocol's requests and answers.
"""
