"""Formal proofs of the gateware (docs/formal.md): one harness module per property, a runner.

``python -m tests.formal.prove`` (``make formal``) runs every check of :data:`CHECKS`: each
property's proof, the mutants that must make it fail, and the reachability checks that show it
is not vacuous.
"""
