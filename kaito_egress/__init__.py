"""One egress guard for every fetch the product makes from inside a cluster.

`kaito_egress.policy` (standard library only) decides which hosts and addresses may be reached;
`kaito_egress.guard` resolves and pins checked addresses; `kaito_egress.limits` bounds sizes,
ratios and time; `kaito_egress.http` (httpx) and `kaito_egress.requests_adapter` (requests, for
oras) connect only to checked addresses and re-check every redirect.
"""
