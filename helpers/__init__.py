"""Small modules the notebooks import, one concern each (see the README's layout table).

Importing a module here has no side effects: nothing seeds, downloads, mounts or plots.
"""
