# The emulated Colab kernel imports google.colab at start, as Colab's own kernel does.
import google.colab  # noqa: F401
