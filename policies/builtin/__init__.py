"""Policies shipped with Ostiary: :mod:`.allow_list` (a static YAML allow list)."""
