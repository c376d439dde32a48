"""Students of a trained bundle: structured pruning and knowledge distillation (issue 17).

``make_student(teacher_dir, StudentOptions(method="prune"|"distill", ...), output)`` rebuilds the
teacher's torch model (``teachers.py``), prunes it (``structured.py``) or sizes a smaller model of
the same recipe (``distill.py``), trains it with the recipe loop and writes a bundle.
``kubemaas students`` is its command line (``cli.py``).
"""
