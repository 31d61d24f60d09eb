"""From raw branches to a feature matrix: the preprocessing layer.

Three levels, each usable alone:

- the expression language: ``expr`` (tokenizer + Pratt parser -> AST, never Python
  ``eval``), ``typecheck`` (static kinds/dtypes, errors with a caret) and ``evaluate``
  (vectorised over numpy/awkward, with the numpy fast paths of ``jagged``);
- one chunk: ``program.Program`` compiles a ``PipelineSpec`` (select -> define -> cuts ->
  ``features``, ``labels``, weights, ``split``; a dataset's own steps from ``steps``),
  says which branches it reads (``branches``), type-checks them (``binding``) and turns
  a chunk of columns into a ``ChunkResult`` (``chunk``); pure, no I/O;
- the stream: ``pipeline.Preprocessor`` drives ``mlaas4hep.data`` through the program
  (``prefetch``: read ahead, process in threads), accumulates the first pass
  (``firstpass``, ``normalize``, cached by ``cache``) and yields ``FeatureBatch`` objects
  (``shuffle`` for mixed, seeded order).

``legacy`` converts the inputs of the old MLaaS4HEP workflow into a pipeline spec.
"""
