"""kubemaas_runtime.training"""
