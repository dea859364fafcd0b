"""Emulated PC devices, one small class each; none of them knows where it is mapped."""
