"""mlaas4hep.data: reading ROOT data of any size in bounded memory.

The only layer that touches uproot, fsspec and XRootD. Import the modules directly:

- ``sources``: ``resolve_files``, ``open_tree``, ``file_identity``
- ``schema``: ``inspect_tree`` -> ``TreeSchema`` / ``BranchInfo``
- ``stream``: ``stream``, ``iterate_file``, ``partitions``, ``iterate_partition``, ``Chunk``,
  ``count_entries``
- ``stats``: ``first_pass`` and the mergeable accumulators (``ScalarStats``, ...)
- ``samples``: ``write_sample``, ``write_sample_set`` (NanoAOD-like toy files)

See docs/data.md.
"""
