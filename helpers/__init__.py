"""The kit's code, grouped by the study's stages; the notebooks import it.

Layers, lowest first; a module imports only from its own layer or lower ones, and there are no
import cycles (``tests/test_architecture.py`` checks both):

    paths, profiles   where things live (the kit's home, local or on Drive); the one typed run config
                      and the named profiles
    runtime           every notebook's setup: Drive and the home on Colab, what Colab lacks, the GPU check
    data/             sources, validation, the prepared cache, splits, loaders      notebook 01
    models/           UNet, UNet++, TransUNet, the registry of named configs        notebooks 02, 03
    training/         loss, metrics, the loop, resume, run folders, devices, grid   notebooks 02, 03
    evaluation/       inference, scoring, statistics, failures, challenge format    notebook 04
    reporting/        tables, figures, report, viewer, study snapshots              notebook 04
    pipeline, bench   the papermill runner of the four notebooks; the benchmarks

Importing a module here has no side effects: nothing seeds, downloads, mounts or plots.
"""
