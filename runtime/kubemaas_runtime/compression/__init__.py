"""kubemaas_runtime.compression"""
