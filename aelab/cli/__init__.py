"""The entry points: ``aelab-train``, ``aelab-eval``, ``aelab-compare``, ``aelab-predict``, ``aelab-export`` (thin; the
work is in the layers below).
"""
