"""Where lrl-harness keeps what it builds (``paths``) and the progress display (``progress``)."""
