"""Pure builders: custom resource spec + settings -> child object dicts. No I/O here."""
