"""Adapters that make diffsr's parts usable inside other toolboxes (import them explicitly)."""
