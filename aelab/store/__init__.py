"""The run-folder store: the record (``metrics.json``), locks, atomic files, checkpoints, finding runs (files only, no
training).
"""
