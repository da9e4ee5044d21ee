"""``lrl run``: its settings (``config``), the stages in order with resume and hooks (``runner``,
``stages/``), the run folder (``rundir``), the teacher cache and cost, recipes and LoRA training,
GGUF export and llama.cpp's converter.
"""
