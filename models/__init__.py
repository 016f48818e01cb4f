"""Data and rules: tortoise models plus the operations on them. Imports nothing from bot/ or handlers/.

Every model sets ``_no_comments = True``: tortoise-orm would otherwise read each model class's
source to look for ``#:`` field comments (re-parsing the whole module once per model, about 0.9 s
of every process start, `linli` commands included). Field documentation here is in ordinary
comments and in the Model docstring, so nothing is lost.
"""
