"""Built-in plugins. Each is registered through the ``lrl_harness`` entry-point group, as a
third-party plugin would be."""
