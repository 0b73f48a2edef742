"""`kubectl bridge-migration`: a kubectl plugin (krew-style, ``kubectl-bridge_migration`` on PATH).

``analyze`` tables every VM and VMI with what a drain would do to it; ``status`` and ``fixup`` run
the fixer's own commands through ``kubectl exec`` in whichever fixer serves a VMI.
"""
