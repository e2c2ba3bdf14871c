"""depthcard: how deep the safety alignment of an open-weight language model goes.

Installed, the distribution provides this one import name; its subpackages are the
repository's top-level folders (see the README's layout table and `docs/architecture.md`).
"""
