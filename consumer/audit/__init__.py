"""The audit side: task lifecycle events projected into ``tasks`` and ``execution_logs``.

:mod:`consumer.audit.fold` is the pure projection; :mod:`consumer.audit.handler` writes it.
"""
