"""``lrl bench``: targets, the measurement envelope, one request at a time (``measure``) or under load
(``load``), each target in its own process (``isolation``), performance statistics, the bench as a
whole (``runner``) and a finished run's trained student as targets (``trained``).
"""
