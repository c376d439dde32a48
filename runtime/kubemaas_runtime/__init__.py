"""Kubemaas data plane: everything that runs inside workload pods."""
