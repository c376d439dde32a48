"""Kubemaas control plane: the kopf operator for TrainingJob and ModelService."""
