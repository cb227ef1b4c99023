"""Scale distillation (`srdd distill`, pretrain/distill/task.py): a student on a shorter schedule
learns from a full-schedule teacher's samples. ``schedule`` relates the two schedules (defaults,
re-indexing, the shared prefix), ``targets`` makes the student's targets and loss,
``teacher_samples`` generates the teacher's samples once into pyramid shards."""
from pretrain.distill.schedule import (VAR_STUDENT, check_schedule, default_student_schedule, nearest_scale,
                                       remap_to_schedule, schedule_model, shared_prefix)
from pretrain.distill.targets import distill_loss, requantize, teacher_prefix_probs

__all__ = ["VAR_STUDENT", "check_schedule", "default_student_schedule", "nearest_scale", "remap_to_schedule",
           "schedule_model", "shared_prefix", "distill_loss", "requantize", "teacher_prefix_probs"]
