"""kubemaas_runtime.storage"""
