"""The entry points: ``aelab-train``, ``aelab-eval``, ``aelab-compare``, ``aelab-predict``, ``aelab-export`` (thin; the
work is in the layers below).

Importing this package bounds OpenMP's spin before torch loads (:func:`aelab.run.threads.bound_spin`), so that
jobs started side by side share a machine.
"""

from aelab.run.threads import bound_spin

bound_spin()
