"""Processes: the worker, and the dev stack that runs everything in one terminal."""
