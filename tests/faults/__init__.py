"""Fault-injection suite (pytest -m fault): kills, restarts, stalls, poison, slow handlers."""
