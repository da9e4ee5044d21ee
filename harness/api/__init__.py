"""The plugin contract: what a plugin implements and what it may use.

``contract`` (the Task, Teacher, Backend protocols and the values that cross them), ``hookspecs``,
``options`` (declared once, checked by one helper), ``errors``, ``registry`` (finding plugins, opening a
backend), and helpers the built-ins share (``prompting``, ``gguf``, ``deps``). Plugins import these
names from ``lrl_harness`` itself, never from here: that is the public API.
"""
