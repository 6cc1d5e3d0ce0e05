"""A stand-in for Colab's ``google.colab`` package, for the kit's emulated-Colab tests (not Google's code).

Only what the kit touches: importing it marks the kernel as a Colab runtime (the kit looks for
``google.colab`` in ``sys.modules``, as Colab's kernel imports it at start), and :mod:`.drive` mounts a
folder of the test machine as Google Drive.
"""
from google.colab import drive

__all__ = ["drive"]
