"""What people and CI read: the regression gate (``check``), paired comparisons of systems
(``compare``), reports of one file (``report``) or several (``multi``), tables and plots.
"""
