"""Asking and grading: the one loop that asks a backend and records each answer (``ask``), the
accuracy statistics every figure carries (``statistics``), re-grading stored answers (``rescore``) and
the parity of two engines running the same student (``parity``).
"""
