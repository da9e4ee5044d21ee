"""The results file: its names (``format``), its parts (``records``: one answered problem, a score
block), the whole file declared (``schema``), atomic file writes (``files``), reading, writing and
upgrading (``io``), and the hardware fingerprint a figure was measured on (``machine``).
"""
