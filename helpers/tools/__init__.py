"""What maintainers and benchmarks use; no notebook imports it, and no course module imports it.

Each module is a command (``python -m helpers.tools.<module> --help``):

- ``bench``: the data path, training and inference speed of this machine → ``results/bench.csv``
  (``make bench``).
- ``bench_gpu``: the GPU rows of ``bench``: training steps against the GPU's peak TFLOP/s, channels_last, AMP,
  torch.compile, loader workers.
- ``bench_predict``: predicting on your own images: images/s and peak memory for small and large JPEGs.
- ``gpu_window``: the GPU study on any CUDA GPU, in a time budget you choose: the T4 check, the GPU bench, the recipe
  comparison, then the grid, each in a share of the time, into one bundle (``make gpu-window``; ``--dry-run`` on a
  CPU).
- ``gpu_window_steps``: the window's steps, its settings and its clock.
- ``shrink``: a resized copy of a dataset in the official layout, to take it to a GPU machine or Drive.
- ``fork``: point a copy of the kit (its Colab badges and the notebooks' clone) at a fork's GitHub address.
- ``recipe_table``: test Dice per recipe with CIs and paired differences to ``seed``; and the test-time choices
  (flip TTA, post-processing, a threshold tuned on validation) of a run.
- ``ship``: a run's best weights in fp16 with a model card into a committed study (the models in the box), and
  their Dice through ``predict``.
- ``publish``: executed notebooks, their paths made relative and large images made JPEGs, to commit beside a study.

Layer: the highest; a tool may import any course module (``tests/kit/test_architecture.py`` checks the reverse).
"""
