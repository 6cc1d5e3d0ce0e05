"""Data: from a source to a prepared, split, cached dataset and the loaders over it (notebook 01; 02 and 03 call
:func:`helpers.data.sources.ensure_prepared` again on a fresh runtime).

- ``synthetic``: the offline sample, drawn in seconds, no patient data.
- ``isic``: the official folder layout, pairing and per-file validation with errors that name the file.
- ``layouts``: which layout a dataset folder has (ISIC, PH2, plain image/mask folders) and its pairs for a protocol.
- ``folders``: the plain image/mask folders layout (folder pairs, mask suffix, pairing) and shared folder walking.
- ``download``: resumable downloads and the table of official ISIC 2018 Task 1 zips.
- ``archives``: safe zip extraction (Windows paths fixed, escaping entries refused).
- ``bundled``: the real ISIC 2018 Task 1 training set at 128 px that comes with the kit (the default data).
- ``sources``: ``DATA_SOURCE`` dispatch and ``ensure_prepared``.
- ``locks``: one preparation at a time per dataset, when several workers start on a fresh home.
- ``prep``: the resized uint8 cache, the split and the nested fractions.
- ``study``: the study notebook 01 chooses and records; 02-04, the runner and the CLI follow it.
- ``loaders``: Dataset, augmentation, repeatable samplers and DataLoaders over the cache.

Imports nothing from the layers above (models, training, evaluation, reporting).
"""
