"""rljob: run Ray RLlib reinforcement-learning training as Kubernetes RLTrainingJob resources."""

__version__ = "0.1.0"
