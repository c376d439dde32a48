"""Compression: build int8/fp16/fp32-optimised variants of a bundle, measure them, pick one.

Modules, one concept each:

    settings.py   CompressSettings (KUBEMAAS_ env, CLI flags override)
    cpu.py        what the CPU can do for int8 (VNNI or not -> reduce_range)
    variants.py   the variant builders: fp32, int8-dynamic, int8-static, fp16
    measure.py    size, latency p50/p95 (batch 1 and 32, interleaved), accuracy vs fp32
    select.py     the selection policy (pure)
    report.py     compression.json, the gate-failure message, the termination message
    students.py   pruned/distilled student bundles (kubemaas students) as candidates of the table
    pipeline.py   compress(): bundle dir in, output bundle dir out
    cli.py        ``kubemaas compress``
"""
