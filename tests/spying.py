"""Watching a module's function from a test without changing what it does."""

from __future__ import annotations


def record_calls(monkeypatch, module, name: str, record) -> list:
    """Wrap module.<name> so each call appends what `record(*args)` gives (or extends by it, for a list)
    to the list returned, then runs the real function."""
    seen = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        noted = record(*args)
        if isinstance(noted, list):
            seen.extend(noted)
        else:
            seen.append(noted)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen
