"""Upstream providers behind one interface (IProvider); they know nothing of Klein."""
