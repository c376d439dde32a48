"""kubemaas_runtime.serving"""
