"""Development only: the `nudge dev` stack, demo data and the sample ITSM.

Never imported by production code paths (the API, the worker, store, workflows,
activities); only the `nudge dev` command and the development-only mount of the sample
ITSM in the API reach it. `tests/test_layout.py` checks this.
"""
