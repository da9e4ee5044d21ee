"""The names a results file uses: its schema id and versions, and the pipeline's stage names and labels.

Kept apart from the pydantic models so that modules which only need a stage name stay cheap to import.
"""

SCHEMA = "lrl-harness/results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
STAGES = ("student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora")
STAGE_LABELS = {
    "student_baseline": "Student baseline",
    "teacher_baseline": "Teacher baseline",
    "bootstrap": "LRL bootstrap (train split)",
    "lrl": "Teacher with learned strategy",
    "lora": "Student after LoRA",
}
