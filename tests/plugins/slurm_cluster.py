"""Session fixture for the local SLURM cluster (filled by the SLURM area)."""
