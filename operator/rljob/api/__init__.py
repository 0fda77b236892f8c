"""The RLTrainingJob API: models, constants, names. Imports nothing else of rljob's."""
from . import constants, names
from .manifest import ManifestError, load_job, load_job_file, parse_job
from .models import RECIPES, JobSpec, JobStatus, RLTrainingJob
from .vocabulary import TERMINAL_PHASES

__all__ = [
    "RECIPES",
    "TERMINAL_PHASES",
    "JobSpec",
    "JobStatus",
    "ManifestError",
    "RLTrainingJob",
    "constants",
    "load_job",
    "load_job_file",
    "names",
    "parse_job",
]
