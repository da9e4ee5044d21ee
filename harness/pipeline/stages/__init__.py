"""The stages of ``lrl run``, each a function ``stage(run) -> StageOutput``.

``run`` (a :class:`~lrl_harness.pipeline.stages.run.Run`) holds what every stage reads: the configuration, the
task, the teacher and student, the run folder (:class:`~lrl_harness.pipeline.rundir.RunDir`) and the results
so far. A stage returns its score block and what it adds to the results; the pipeline
(``pipeline/runner.py``) writes them, in order, and skips stages already done.

- ``teacher.py``: teacher_baseline, bootstrap (LRL: journal and distil), lrl (the learned strategy)
- ``student.py``: student_baseline, lora (transfer data, training, the trained student)
- ``gguf.py``: export of the trained student to GGUF, and parity of the exports
"""

from lrl_harness.pipeline.stages.gguf import export, parity
from lrl_harness.pipeline.stages.run import Run, StageOutput
from lrl_harness.pipeline.stages.student import lora, student_baseline
from lrl_harness.pipeline.stages.teacher import bootstrap, lrl, teacher_baseline

STAGE_FUNCTIONS = {
    "student_baseline": student_baseline,
    "teacher_baseline": teacher_baseline,
    "bootstrap": bootstrap,
    "lrl": lrl,
    "lora": lora,
}

__all__ = ["STAGE_FUNCTIONS", "Run", "StageOutput", "export", "parity"]
