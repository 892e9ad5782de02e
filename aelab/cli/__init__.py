"""The entry points: ``aelab-train``, ``aelab-eval``, ``aelab-compare``, ``aelab-predict``, ``aelab-export`` (thin; the
work is in the layers below).

``aelab-eval``, ``-predict`` and ``-export`` bound OpenMP's spin before torch loads
(:func:`aelab.cli.common.entry_main`); a training job decides when it has chosen its threads
(:func:`aelab.run.session.plan_threads`).
"""
